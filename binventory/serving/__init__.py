"""Serving stage: export, the predictor (torch and ONNX Runtime backends), batch prediction and
the HTTP counting service. It uses the model and data's preprocessing, never the training code,
and knows no database."""
