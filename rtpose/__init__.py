"""rtpose: real-time multi-person pose estimation.

The runtime (this package) needs numpy, OpenCV and onnxruntime, never torch.
Training lives in ``trainer``, export in ``export``, calibration in ``calib``.
"""

__version__ = "0.1.0"
