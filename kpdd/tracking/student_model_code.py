"""The code of a logged student model (MLflow's models-from-code): the model is this file plus its artifacts."""

import mlflow

from kpdd.tracking.model import StudentModel

mlflow.models.set_model(StudentModel())
