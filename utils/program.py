"""What every program does after parsing its flags, for both tasks: one dispatch design.

``segmentation.main`` and ``classification.main_fs`` / ``main_dmt`` each parse their flags into a
frozen run configuration (:class:`segmentation.run_config.RunConfig`,
:class:`classification.run_config.RunConfig`) that names its ``task`` and call :func:`run_program`
with a table ``{task: "module:function"}``. It then

1. skips work that is already done (:func:`utils.run_files.skip_if_done` on ``config.done``) — before
   torch is imported, so a finished step costs a fraction of a second;
2. checks that every folder the task writes to is writable (``config.writable``) and, unless
   ``--no-check-data``, every data file it reads (``check_data(config)``);
3. sets up the runtime (:func:`utils.cli.setup_runtime`: device, torchrun process group, seeds,
   precision), imports the task's function and runs ``function(config, runtime)``;
4. tears the process group down, also on failure.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

from utils.run_files import skip_if_done


def run_program(config: Any, tasks: Mapping[str, str], check_data: Callable[[Any], None]) -> None:
    """Run ``tasks[config.task]`` (``"module:function"``) on ``config`` (see the module docstring)."""
    if skip_if_done(config.done):
        return
    from utils.io import require_writable_dir

    for folder, flag in config.writable:
        require_writable_dir(folder, flag)
    if not config.args.no_check_data:
        check_data(config)

    from utils import distributed
    from utils.cli import setup_runtime

    module, _, name = tasks[config.task].partition(":")
    function = getattr(importlib.import_module(module), name)
    runtime = setup_runtime(config.args)
    try:
        function(config, runtime)
    finally:
        distributed.cleanup()
