from tests.training.conftest import tiny_manifest  # noqa: F401 (the training tests' fixture)
