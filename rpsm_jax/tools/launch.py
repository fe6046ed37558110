r"""Starts N local processes of one multi-process run: multi-host without a cluster.

  python -m rpsm_jax.launch --num_processes=2 [--cpu_devices=2] -- \
      python -m rpsm_jax.main --config=configs/synthetic_tiny.py --workdir=/tmp/mh

Each child gets RPSM_COORDINATOR_ADDRESS (127.0.0.1 and a free port), RPSM_NUM_PROCESSES,
RPSM_PROCESS_ID (rpsm_jax.distributed reads them) and, with --cpu_devices, that many CPU
devices (JAX_NUM_CPU_DEVICES). Output lines are prefixed with the process id. When one child
fails, the others are stopped; SIGTERM / SIGINT are passed on to every child (so a
preemption reaches all "hosts" at once); children die with the launcher (PR_SET_PDEATHSIG).
Exit status: the first non-zero child status, else 0.
"""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Optional, Sequence

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _die_with_parent() -> None:
  try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  except OSError:
    pass  # not Linux: the launcher still stops its children on every exit path it sees


def child_env(process_id: int, num_processes: int, address: str,
              cpu_devices: Optional[int] = None, base: Optional[dict] = None) -> dict:
  env = dict(os.environ if base is None else base)
  env.update(RPSM_COORDINATOR_ADDRESS=address, RPSM_NUM_PROCESSES=str(num_processes),
             RPSM_PROCESS_ID=str(process_id))
  if cpu_devices:
    env["JAX_NUM_CPU_DEVICES"] = str(cpu_devices)
    env.setdefault("JAX_PLATFORMS", "cpu")
  return env


def _pump(stream, prefix: str, out) -> None:
  for line in iter(stream.readline, b""):
    out.buffer.write(prefix.encode() + line)
    out.flush()
  stream.close()


def launch(command: Sequence[str], num_processes: int, cpu_devices: Optional[int] = None,
           env: Optional[dict] = None, timeout_s: Optional[float] = None,
           grace_s: float = 10.0) -> list[int]:
  """Runs `command` as processes 0..N-1 of one run; returns their exit codes.

  On the first failure (or after timeout_s) the remaining children get SIGTERM, then
  SIGKILL after grace_s. A child that timed out reports -SIGKILL or its own status.
  """
  address = f"127.0.0.1:{free_port()}"
  children, pumps = [], []
  for i in range(num_processes):
    p = subprocess.Popen(list(command), env=child_env(i, num_processes, address,
                                                      cpu_devices, env),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         preexec_fn=_die_with_parent)
    children.append(p)
    t = threading.Thread(target=_pump, args=(p.stdout, f"[{i}] ", sys.stdout),
                         daemon=True)
    t.start()
    pumps.append(t)

  def forward(signum, frame):
    del frame
    for p in children:
      if p.poll() is None:
        p.send_signal(signum)
  previous = {}
  if threading.current_thread() is threading.main_thread():
    for signum in (signal.SIGTERM, signal.SIGINT):
      previous[signum] = signal.signal(signum, forward)
  deadline = None if timeout_s is None else time.monotonic() + timeout_s
  try:
    while any(p.poll() is None for p in children):
      failed = any(p.poll() not in (None, 0) for p in children)
      late = deadline is not None and time.monotonic() > deadline
      if failed or late:
        _stop(children, grace_s)
        break
      time.sleep(0.1)
  finally:
    _stop(children, grace_s)
    for signum, handler in previous.items():
      signal.signal(signum, handler)
    for t in pumps:
      t.join(5)
  return [p.returncode for p in children]


def _stop(children, grace_s: float) -> None:
  for p in children:
    if p.poll() is None:
      p.terminate()
  end = time.monotonic() + grace_s
  for p in children:
    try:
      p.wait(max(0.0, end - time.monotonic()))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()


def main(argv: Optional[Sequence[str]] = None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      prog="python -m rpsm_jax.launch",
      description="Start N local processes of one multi-process run.")
  parser.add_argument("--num_processes", type=int, required=True)
  parser.add_argument("--cpu_devices", type=int, default=None,
                      help="CPU devices per process (JAX_NUM_CPU_DEVICES)")
  parser.add_argument("--timeout_s", type=float, default=None)
  parser.add_argument("command", nargs=argparse.REMAINDER,
                      help="the command each process runs, after --")
  args = parser.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command or args.num_processes < 1:
    parser.error("give --num_processes >= 1 and a command after --")
  codes = launch(command, args.num_processes, args.cpu_devices, timeout_s=args.timeout_s)
  bad = [c for c in codes if c]
  if bad:
    print(f"launch: exit codes {codes}", file=sys.stderr)
  return bad[0] if bad else 0


def run():
  """The command line: `python -m rpsm_jax.launch`."""
  sys.exit(main())


if __name__ == "__main__":
  run()
