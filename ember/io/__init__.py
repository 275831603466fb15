"""OpenVINO IR v10/v11 reading and v11 writing."""

from ember.io.ir_reader import read_ir, read_ir_bytes
from ember.io.ir_writer import compress_model_to_fp16, serialize, write_ir

__all__ = ["compress_model_to_fp16", "read_ir", "read_ir_bytes", "serialize", "write_ir"]
