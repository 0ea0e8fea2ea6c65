"""onnxl2: post-training size compression of ONNX models.

``inspect`` lists a model's weights, ``compress`` writes a sidecar bitstream and a compressed
ONNX that plain ONNX Runtime runs, ``decompress`` gives that ONNX back exactly, ``validate``
compares two models on data with ONNX Runtime.
"""
from .version import __version__  # noqa: E402

from .errors import BitstreamError, DataError, ModelError, OnnxL2Error  # noqa: E402
from .api import compress, decompress, inspect, validate  # noqa: E402
from .contract import Contract  # noqa: E402
from .options import CompressOptions  # noqa: E402

__all__ = ["compress", "decompress", "inspect", "validate", "CompressOptions", "Contract", "OnnxL2Error",
           "BitstreamError", "DataError", "ModelError", "__version__"]
