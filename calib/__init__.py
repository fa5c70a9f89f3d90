"""INT8 calibration: an rtpose ONNX model and your own images in, a Q/DQ INT8 model out.

- :mod:`calib.data` — calibration images from a folder, a video, a COCO-format
  dataset or the synthetic generator, preprocessed as the runtime does;
- :mod:`calib.cache` — tensor ranges cached under a key of model, data,
  preprocessing and settings;
- :mod:`calib.quantize` — ranges and the symmetric INT8 Q/DQ model through
  ``onnxruntime.quantization``, and the check of its form;
- :mod:`calib.guard` — AP of FP32 and INT8, layer sensitivity, layers kept in FP32;
- :mod:`calib.calibrate` — all of it, as ``rtpose calib`` runs it.

Needs onnx and onnxruntime (and pycocotools for the accuracy guard), no torch.
"""
