"""What ships: ONNX export (:mod:`.export`), INT8 quantization (:mod:`.quantize`), prediction on files and
long recordings with PyTorch or ONNX Runtime (:mod:`.predictor`, :mod:`.onnx_predictor`) and Kaggle-style
submission CSVs (:mod:`.submission`). ONNX and ONNX Runtime are imported lazily (extra ``audioclf[deploy]``).
"""
