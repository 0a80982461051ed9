"""Build hook: ship ``finetuner_selfsup.pth`` at the top of site-packages.

All metadata lives in ``setup.cfg``. The only thing a declarative config cannot do is
place a ``.pth`` file next to the packages; that file is what lets a plain
``import finetuner`` pick the plugin up with no import in user code (see
``finetuner_selfsup/_bootstrap.py``).
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = "finetuner_selfsup.pth"
PTH_SOURCE = Path(__file__).parent / "finetuner_selfsup" / PTH_NAME


class build_py_with_pth(build_py):
    """Copy the activation ``.pth`` file to the root of the build (wheel) directory."""

    def run(self) -> None:
        super().run()
        self.copy_file(str(PTH_SOURCE), str(Path(self.build_lib) / PTH_NAME))

    def get_outputs(self, include_bytecode: bool = True) -> list:
        return super().get_outputs(include_bytecode) + [str(Path(self.build_lib) / PTH_NAME)]


setup(cmdclass={"build_py": build_py_with_pth})
