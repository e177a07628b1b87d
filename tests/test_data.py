import pandas as pd
import pytest

from qbench.data import load_task_data, split_file
from qbench.errors import QbenchError
from qbench.tasks import TaskSpec


def rte(**kw):
    return TaskSpec(name="rte", metrics=("accuracy",), main_metric="accuracy", eval_splits=("validation",),
                    text_fields=("sentence1", "sentence2"), mirror="glue/rte", **kw)  # fmt: skip


def test_local_mirror_real_rte(data_dir):
    data = load_task_data(rte(), str(data_dir), need_train=True, max_train=100, max_eval=None, seed=1)
    assert len(data["train"]) == 100 and len(data["validation"]) == 277  # the official RTE dev size
    assert set(data["train"]["label"]) <= {0, 1}
    again = load_task_data(rte(), str(data_dir), need_train=True, max_train=100, max_eval=5, seed=1)
    assert again["train"]["idx"] == data["train"]["idx"]  # seeded subset
    assert again["validation"]["idx"] == [0, 1, 2, 3, 4]  # the first N of evaluation splits


def test_missing_split_names_expected_path(tmp_path):
    with pytest.raises(QbenchError, match=str(tmp_path / "glue" / "rte" / "train.parquet")):
        split_file(rte(), "train", str(tmp_path))


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_user_folder_any_format(tmp_path, ext):
    df = pd.DataFrame({"sentence1": ["a b", "c"], "sentence2": ["d", "e f"], "label": [0, 1]})
    path = tmp_path / f"validation.{ext}"
    {"jsonl": lambda: df.to_json(path, orient="records", lines=True), "csv": lambda: df.to_csv(path, index=False),
     "parquet": lambda: df.to_parquet(path)}[ext]()  # fmt: skip
    data = load_task_data(rte(data_dir=str(tmp_path)), "/nonexistent", need_train=False, max_train=None,
                          max_eval=None, seed=0)  # fmt: skip
    assert data["validation"]["label"] == [0, 1] and data["validation"]["idx"] == [0, 1]


def test_user_folder_missing_column(tmp_path):
    pd.DataFrame({"sentence1": ["a"], "label": [0]}).to_parquet(tmp_path / "validation.parquet")
    with pytest.raises(QbenchError, match="sentence2"):
        load_task_data(rte(data_dir=str(tmp_path)), None, need_train=False, max_train=None, max_eval=None, seed=0)
