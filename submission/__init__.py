"""Writing what the competition reads: predictions, model and report files, atomically."""
from submission.atomic import atomic_write_bytes, to_jsonable, write_json
from submission.output_dir import OutputDirError, check_output_dir
from submission.writer import load_model_file, write_model, write_predictions

__all__ = [
    "OutputDirError",
    "atomic_write_bytes",
    "check_output_dir",
    "load_model_file",
    "to_jsonable",
    "write_json",
    "write_model",
    "write_predictions",
]
