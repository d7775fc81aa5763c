"""Cost of generation under KV-cache policies on this machine: a 512-token prompt through SmolLM2-135M's
30 layers, then 32 generated tokens under four policies at one budget (issue 18's target: within a
minute on a CPU). Prints seconds per phase; nothing is asserted."""
import argparse
import time

import torch

import xviz.decode as dec
from xviz.inputs import model as models

TEXT = ("The history of the city begins with a small settlement on the river, where traders met to exchange salt, "
        "grain and cloth. Over the centuries the settlement grew into a market town, then into a fortified city "
        "with walls, gates and a cathedral. ")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--budget", type=int, default=128)
    ap.add_argument("--policies", default="window,sinks,h2o,snapkv")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    lm = models.decoder("smollm2-135m")
    t1, c1 = time.perf_counter(), time.process_time()
    ids = lm.tokenizer(TEXT * 40)["input_ids"][:a.prompt_tokens]
    prompt = lm.tokenizer.decode(ids)
    steps = []
    rs = dec.generate_many(a.policies.split(","), prompt, max_new_tokens=a.new_tokens, budget=a.budget,
                           progress=lambda done, total: steps.append(time.perf_counter()))
    t2, c2 = time.perf_counter(), time.process_time()
    print(f"torch threads {torch.get_num_threads()}; load {t1 - t0:.1f} s; prompt {len(rs[0].prompt_ids)} tokens; "
          f"generate {len(rs)} policies x {a.new_tokens} tokens: {t2 - t1:.1f} s wall, {c2 - c1:.1f} s CPU "
          f"(prefill + first token {steps[0] - t1:.1f} s wall)")
    for r in rs:
        print(f"  {r.label}: mean KL {r.kl.mean():.3f}, cache {r.cache_bytes.mean() / 2**20:.1f} MiB, {r.text[:60]!r}")


if __name__ == "__main__":
    main()
