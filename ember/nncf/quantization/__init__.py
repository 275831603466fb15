"""``nncf.quantization``'s module paths, for code that imports NNCF's names from there."""
