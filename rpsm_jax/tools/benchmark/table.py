"""The side-by-side table `python -m rpsm_jax.benchmark` prints from run_benchmark's results."""

from rpsm_jax.tools.benchmark.runners import FRAMEWORKS


def _fmt(value, spec=".1f") -> str:
  return "-" if value is None else format(value, spec)


def _rate(value) -> str:
  """Frames/s with at least three significant digits (the paper config on a CPU: 0.2)."""
  return "-" if value is None else format(value, ".1f" if value >= 100 else ".3g")


def format_table(results: dict) -> str:
  """A side-by-side table of the frameworks measured (and ratios jax / torch)."""
  names = [n for n in FRAMEWORKS if n in results]
  c, env = results["config"], results["environment"]
  lines = [
      f"device: {env['device']} ({env['backend']}, {env['cpus_usable']} usable CPUs, "
      f"load {_fmt(env['load_average'][0] if env['load_average'] else None, '.2f')}, "
      f"malloc {env.get('malloc', '?')})",
      f"batch: {c['batch_clips']} clips x {c['clip_length']} frames = "
      f"{c['frames_per_step']} frames/step at {c['input_size']} px, width {c['width']}",
      f"forward {results['forward_gflops_per_frame']:.3f} GFLOP/frame (XLA); train "
      f"{results['train_gflops_per_frame']:.3f} (3x forward); matmul roofline "
      f"{results['matmul_gflops_per_s']:.1f} GFLOP/s",
      f"median over {results['repeats']} timings of {results['steps_per_timing']} steps; "
      "[min, max]",
      "",
  ]

  def spread(info, key):
    s = info.get(key + "_spread")
    return f"[{_rate(s['min'])}, {_rate(s['max'])}]" if s else "-"

  on_gpu = env["backend"] != "cpu"

  def mem(info, phase):
    if on_gpu:
      v = info.get(f"{phase}_device_peak_mb", info.get(f"{phase}_xla_peak_mb"))
    else:
      v = info.get(f"{phase}_host_peak_rss_delta_mb")
    return _fmt(v, ".0f")

  def speed_rows(p):   # p: "train" or "infer"
    return [
        (f"{p} frames/s", lambda i: _rate(i.get(f"{p}_frames_per_s"))),
        ("  [min, max]", lambda i: spread(i, f"{p}_frames_per_s")),
        (f"{p} ms/step", lambda i: _fmt(i[f"{p}_ms_per_step"]["median"])),
        (f"{p} CPU s/step",
         lambda i: _fmt(i.get(f"{p}_cpu_s_per_step", {}).get("median"), ".2f")),
        (f"{p} GFLOP/s", lambda i: _fmt(i.get(f"{p}_gflops_per_s"))),
        (f"{p} % of matmul", lambda i: _fmt(100 * i[f"{p}_fraction_of_matmul"], ".0f")),
    ]

  rows = speed_rows("train") + speed_rows("infer") + [
      ("train compile s", lambda i: _fmt(i.get("train_compile_s", 0.0)
                                         + i["train_first_call_s"], ".2f")),
      ("infer compile s", lambda i: _fmt(i.get("infer_compile_s", 0.0)
                                         + i["infer_first_call_s"], ".2f")),
      ("train peak mem MB", lambda i: mem(i, "train")),
      ("infer peak mem MB", lambda i: mem(i, "infer")),
      ("train XLA buffers MB", lambda i: _fmt(i.get("train_xla_peak_mb"), ".0f")),
  ]
  ratio_keys = {"train frames/s": "train_frames_per_s", "infer frames/s": "infer_frames_per_s"}
  header = f"{'':<20}" + "".join(f"{n:>18}" for n in names)
  if len(names) == 2:
    header += f"{'jax/torch':>12}"
  lines.append(header)
  for label, get in rows:
    line = f"{label:<20}" + "".join(f"{get(results[n]):>18}" for n in names)
    if len(names) == 2 and label in ratio_keys:
      k = ratio_keys[label]
      line += f"{results['jax'][k] / results['torch'][k]:>11.2f}x"
    lines.append(line)
  mem_kind = ("GPU peak: jax = XLA's buffer assignment, torch = max_memory_allocated"
              if on_gpu else "rise of the process's RSS over the warm-up calls")
  if "jax" in results and "convolutions" in results["jax"]:
    lines.append(f"(jax convolutions: {results['jax']['convolutions']})")
  lines.append("(CPU s/step: process CPU time, all threads, spinning included)")
  lines.append(f"(peak mem: {mem_kind}; XLA buffers: parameters, optimiser state, batch, "
               "activations and temporaries of one train step; compile: compilation + "
               "first call)")
  if "pipeline" in results:
    p = results["pipeline"]
    rates = ", ".join(f"{k.split('_')[3]} workers {v:.0f}" for k, v in p.items()
                      if k.startswith("frames_per_s_"))
    lines.append(f"input pipeline ({p['dataset']}), frames/s: {rates}")
  if "streaming" in results:
    s = results["streaming"]
    lines.append(f"streaming: {s['frames_per_s']:.1f} frames/s, median latency "
                 f"{s['latency_ms_median']:.1f} ms")
  return "\n".join(lines)
