"""A sandbox for a hand-in's kernel: bubblewrap (Debian package `bubblewrap`), no root needed
where unprivileged user namespaces are allowed, and prlimit (util-linux) for its bounds.

nbgrader runs a hand-in's code in a Jupyter kernel with the grader's rights: it could read other
hand-ins, the instructor sources with their solutions and hidden tests, or the gradebook, and
write anywhere the grader can. Here the kernel is started through `bwrap` instead (a kernelspec
named "python3" whose command is kernel_argv), and talks to nbgrader over unix sockets, so it
needs no network at all.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .hw import cache_path

REPO_ROOT = Path(__file__).resolve().parent.parent

VISIBLE = ("labkit", "data", ".venv")  # what a hand-in may read of the kit (read-only)
PROCESSES = 4096      # processes and threads of the grading user (RLIMIT_NPROC counts them all): stops a fork bomb
FILE_BYTES = 2**30    # the largest file a hand-in may write


def ram_bytes() -> int:
    """This machine's physical memory, in bytes."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def limits_argv(memory_bytes: int | None = None, processes: int = PROCESSES) -> list[str]:
    """`prlimit` (util-linux) bounds for one kernel, inherited by everything it starts:
    - memory: RLIMIT_DATA, the heap and private writable mappings, so an allocation past it fails
      in that cell (MemoryError, "can't allocate memory") instead of the kernel's OOM killer
      taking the grading machine or a neighbour's hand-in;
    - processes: RLIMIT_NPROC (a fork bomb stops at it; the kernel ignores it for root, so on a
      grading box run as root the pid namespace and the hand-in's time limit bound it instead);
    - no core dumps, and no file larger than FILE_BYTES.
    memory_bytes None: no memory bound."""
    argv = ["prlimit", f"--nproc={int(processes)}", "--core=0", f"--fsize={FILE_BYTES}"]
    if memory_bytes is not None:
        if memory_bytes < 2**29:
            raise ValueError(f"memory_bytes={memory_bytes} is below 512 MiB: a kernel with torch cannot start in that")
        argv.append(f"--data={int(memory_bytes)}")
    return argv + ["--"]


def kernel_argv(root: Path, workdir: Path, runtime: Path, memory_bytes: int | None = None) -> list[str]:
    """The command that starts a hand-in's kernel inside bubblewrap (Debian: bubblewrap).

    The kernel sees the machine read-only, minus the course root and the kit (tmpfs over them;
    only VISIBLE comes back, read-only), minus $HOME and /tmp (empty tmpfs); it can write
    only to its own autograded folder; it has no network, its own process and IPC namespaces,
    and dies with the grader. It talks to nbgrader over unix sockets in `runtime` (transport
    ipc), the one other folder it sees. What it cannot do: read another hand-in, the instructor
    sources, the gradebook or the grader's home; write outside its folder; reach any address.
    Bounded: its memory (memory_bytes), processes and file sizes (limits_argv). On a cluster,
    grading inside a SLURM job adds the job's cgroup around all of it.
    """
    hide = {root.resolve(), REPO_ROOT.resolve()}
    if Path.home() != Path("/"):
        hide.add(Path.home().resolve())
    hide = sorted(hide)
    argv = limits_argv(memory_bytes) + ["bwrap", "--die-with-parent", "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev",
            "--proc", "/proc", "--tmpfs", "/tmp"]
    for d in hide:
        argv += ["--tmpfs", str(d)]
    back = {d / name for d in hide for name in VISIBLE if (d / name).exists()}
    back.add(cache_path().parent.resolve())  # the measured peaks, read-only
    back.add(Path(sys.base_prefix).resolve())  # the interpreter the venv links to (pyenv keeps it in $HOME)
    for d in sorted(p for p in back if p.exists()):
        argv += ["--ro-bind", str(d), str(d)]
    argv += ["--bind", str(workdir), str(workdir), "--bind", str(runtime), str(runtime)]
    for d in hide:  # the empty tmpfs over them read-only too: nothing written there, even in passing
        argv += ["--remount-ro", str(d)]
    argv += ["--chdir", str(workdir), "--unsetenv", "JPY_PARENT_PID",  # its parent is in another pid namespace
             "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp",
             sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    return argv


def nbgrader_args(root: Path, workdir: Path, scratch: Path, memory_bytes: int | None = None) -> tuple[list[str], dict]:
    """nbgrader arguments and environment that run a hand-in's kernel, executing in `workdir`,
    in kernel_argv: a "python3" kernelspec in `scratch` (found first through JUPYTER_PATH) and
    the ipc transport, its sockets in scratch/runtime."""
    runtime = scratch / "runtime"
    spec = scratch / "kernels" / "python3"
    runtime.mkdir(parents=True)
    spec.mkdir(parents=True)
    argv = kernel_argv(root, workdir, runtime, memory_bytes)
    # interrupts as messages: a SIGINT sent to the process group would stop bwrap itself (and so
    # the kernel); the kernel, told over its control channel, interrupts itself inside
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Python (labkit, sandboxed)",
                                                  "language": "python", "interrupt_mode": "message"}))
    args = ["--KernelManager.transport=ipc", f"--KernelManager.ip={runtime / 'kernel'}"]
    return args, {"JUPYTER_PATH": str(scratch), "JUPYTER_RUNTIME_DIR": str(runtime), "TMPDIR": str(runtime)}


def available() -> bool:
    """Whether bubblewrap is installed and allowed to make namespaces here."""
    if not (shutil.which("bwrap") and shutil.which("prlimit")):
        return False
    p = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--unshare-all", "true"], capture_output=True, timeout=30)
    return p.returncode == 0
