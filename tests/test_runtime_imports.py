"""The runtime imports no torch: ``import rtpose`` and its modules stay light."""

import subprocess
import sys

RUNTIME_MODULES = ["rtpose", "rtpose.cli", "rtpose.decoder", "rtpose.fast_decoder", "rtpose.preprocess",
                   "rtpose.estimate", "rtpose.engine.onnxruntime_engine", "rtpose.engine.tensorrt_file",
                   "rtpose.capture", "rtpose.pipeline", "rtpose.runner", "rtpose.synthetic"]


def test_runtime_modules_load_no_torch_and_no_trainer():
    code = ("import sys\n"
            + "".join(f"import {m}\n" for m in RUNTIME_MODULES)
            + "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'trainer')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_help_runs_without_torch():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom rtpose.cli import app\n"
            "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0, r.output\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
