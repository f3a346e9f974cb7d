"""Deployment: everything that runs a trained model outside training.

* :mod:`~scunext.deploy.fuse`: BatchNorm folding.
* :mod:`~scunext.deploy.onnx_export`: ONNX export and its parity check against eager PyTorch.
* :mod:`~scunext.deploy.int8`: static int8 quantization and its Dice cost.
* :mod:`~scunext.deploy.runtimes`: the inference runtimes (``--engine torch|torch-fused|onnxruntime|...``).
* :mod:`~scunext.deploy.predictor`: :class:`Predictor`, a model with its preprocessing, masks at native size.
* :mod:`~scunext.deploy.export`: a run folder -> checked ONNX file (``scunext export``).
* :mod:`~scunext.deploy.dicom_seg`: a predicted mask as a DICOM Segmentation referencing its source (highdicom).

Import order (no cycles): fuse <- onnx_export <- int8 <- runtimes <- predictor <- export.
"""
