"""A real SLURM cluster of two nodes on loopback, for the tests and `make demo SLURM=1` (Debian's slurm-wlm and
munge): one slurmctld and two slurmd (`n1`, `n2`, one CPU each) on free ports, state and spool folders under a
folder of its own, munged started first if none answers. `srun -N2 -n2` runs one task on each node.

    python deploy/slurm_loopback.py FOLDER    start it, print "SLURM_CONF=FOLDER/slurm.conf", run until SIGTERM
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("munge", "munged", "slurmctld", "slurmd", "srun", "sbatch", "sinfo")

CONF = """\
ClusterName=xdclab
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool-%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
ReturnToService=2
MpiDefault=none
NodeName=n[1-2] NodeHostname=localhost NodeAddr=127.0.0.1 Port=[{node_port}-{last_node_port}] CPUs=1 State=UNKNOWN
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP
"""


SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])  # the daemons live in sbin


def missing() -> list[str]:
    return [binary for binary in BINARIES if not shutil.which(binary, path=SEARCH)]


def _path(binary: str) -> str:
    return shutil.which(binary, path=SEARCH) or binary


class LoopbackCluster:
    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        _ensure_munge()
        for folder in ("state", "spool-n1", "spool-n2"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        node_port = _free_port_pair()
        self.conf.write_text(CONF.format(root=self.root, ctld_port=_free_port(), node_port=node_port,
                                         last_node_port=node_port + 1, user=_user()))
        self._spawn([_path("slurmctld"), "-D", "-c", "-f", str(self.conf)], "slurmctld.out")
        for node in ("n1", "n2"):
            self._spawn([_path("slurmd"), "-D", "-N", node, "-f", str(self.conf)], f"slurmd-{node}.out")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = self.run(["sinfo", "-h", "-N", "-o", "%N %t"], check=False).stdout.split("\n")
            if sorted(line.split()[1] for line in states if line.strip()) == ["idle", "idle"]:
                return
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited: {self.logs()}")
            time.sleep(0.5)
        raise RuntimeError(f"the loopback SLURM cluster did not come up: {self.logs()}")

    def run(self, command: list[str], *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout, check=check)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill_node(self, node: str) -> list[int]:
        """A node dies: SIGKILL its slurmd and every process SLURM started on it (the tasks carry
        SLURMD_NODENAME=<node>); the pids killed."""
        daemon = next(p for p in self.processes if p.poll() is None and p.args[-3:-2] == [node])
        killed = [daemon.pid]
        daemon.kill()
        daemon.wait()
        marker = f"SLURMD_NODENAME={node}".encode()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    environ = (entry / "environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if marker in environ:
                    try:
                        os.kill(int(entry.name), 9)
                        killed.append(int(entry.name))
                    except ProcessLookupError:
                        pass
        return killed

    def start_node(self, node: str) -> None:
        """The node comes back (ReturnToService=2: it is usable once its slurmd registers)."""
        self.processes = [p for p in self.processes if p.poll() is None]
        self._spawn([_path("slurmd"), "-D", "-N", node, "-f", str(self.conf)], f"slurmd-{node}.out")

    def logs(self, chars: int = 2000) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}"
                         for log in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.out")))

    def _spawn(self, command: list[str], output: str) -> None:
        with open(self.root / output, "w") as log:
            self.processes.append(subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                   start_new_session=True))


def _ensure_munge() -> None:
    """munged answering on its default socket: the machine's, or one started here (it runs on, like a service)."""
    if subprocess.run([_path("munge"), "-n"], capture_output=True).returncode == 0:
        return
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    subprocess.run([_path("munged"), "--force"], capture_output=True, check=True)
    deadline = time.monotonic() + 20
    while subprocess.run([_path("munge"), "-n"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("munged did not answer on its socket")
        time.sleep(0.2)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_port_pair() -> int:
    """A port p with p and p + 1 free (the two slurmd of NodeName=n[1-2] take consecutive ports)."""
    for _ in range(100):
        port = _free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or missing():
        print(f"usage: slurm_loopback.py FOLDER (needs {', '.join(missing()) or 'nothing more'}; "
              "deploy/system-packages.sh installs slurm-wlm and munge)", file=sys.stderr)
        return 2
    root = Path(argv[0]).resolve()
    root.mkdir(parents=True, exist_ok=True)
    cluster = LoopbackCluster(root)
    cluster.start()
    print(f"SLURM_CONF={cluster.conf}", flush=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        while all(process.poll() is None for process in cluster.processes):
            time.sleep(1)
        print(f"a SLURM daemon exited: {cluster.logs()}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
