import sys

import cv2
import numpy as np

import ember as ov  # the only change: was `import openvino as ov`

core = ov.Core()
model = core.read_model(model="openvino_model/model.xml")
compiled_model = core.compile_model(model=model, device_name="CPU")

input_layer = compiled_model.input(0)
output_layer = compiled_model.output(0)
N, C, H, W = input_layer.shape

image = cv2.imread(sys.argv[1])  # BGR, uint8, any size
resized_image = cv2.resize(image, (W, H))
input_image = np.expand_dims(resized_image.transpose(2, 0, 1), 0)

result = compiled_model([input_image])[output_layer]
result_index = np.argmax(result)
print(result_index)
