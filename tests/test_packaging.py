"""A plain (non-editable) install must carry every module and every config file."""

import subprocess
import sys
import zipfile

from tests.conftest import REPO


def test_wheel_ships_all_modules_and_configs(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True)  # fmt: skip
    (wheel,) = tmp_path.glob("qbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(REPO)) for p in (REPO / "qbench").rglob("*.py")}
    configs = {"qbench/conf/" + str(p.relative_to(REPO / "conf")) for p in (REPO / "conf").rglob("*.yaml")}
    assert modules <= names, sorted(modules - names)
    assert configs <= names, sorted(configs - names)
    assert "qbench/conf/hydra/launcher/slurm.yaml" in names
