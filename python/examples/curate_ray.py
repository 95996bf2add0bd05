"""Curate an instruction data set on Ray Data: read JSONL, score every pair
with MAIN, keep the aligned ones, write Parquet.

    python python/examples/curate_ray.py --model fixtures/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --input pairs.jsonl --output kept/ --min-alignment 0.2 --actors 2

Records are Alpaca (``instruction``, ``input``, ``output``) unless the
column flags say otherwise. With ``--checkpoint DIR`` (and an ``--id``
column, unique per row) the job resumes: run the same command again after
a crash and it skips the rows already written to ``--output``, so every id
ends up there exactly once. Rows that a filter dropped are not written, so
a resumed run scores them again (and drops them again).

``--address`` joins a running cluster (``ray start --head`` / ``--address``
on the other machines); without it a local one with ``--num-cpus`` starts.
"""

from __future__ import annotations

import argparse
import os

import ray
import ray.data

from main_align.ray import checkpoint_config, score_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="GGUF file or Hugging Face folder, on every node")
    p.add_argument("--input", required=True, help="JSONL file(s) or folder")
    p.add_argument("--output", required=True, help="Parquet folder")
    p.add_argument("--min-alignment", type=float, help="keep rows with alignment >= X")
    p.add_argument("--actors", type=int, default=2, help="scoring actors (one model each)")
    p.add_argument("--cpus-per-actor", type=float, default=1)
    p.add_argument("--batch-size", type=int, default=64, help="rows per map_batches call")
    p.add_argument("--blocks", type=int, help="read the input as this many blocks")
    p.add_argument("--instruction", default="instruction")
    p.add_argument("--response", default="output")
    p.add_argument("--input-column", default="input", help="Alpaca's input ('' for none)")
    p.add_argument("--id", default="id", help="the id column (for --checkpoint)")
    p.add_argument("--checkpoint", help="folder recording the rows written, to resume")
    p.add_argument("--address", help="a running Ray cluster to join")
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of a local cluster")
    a = p.parse_args()

    if a.address:
        ray.init(address=a.address)
    else:
        # The actors hold every CPU, so the raylet would start a fresh worker
        # process for each read and write task and kill it when it is done
        # (its idle-worker limit is the CPU count): ~25% of a 2-core machine.
        # Two more kept workers serve them all (RAY_* is Ray's configuration,
        # read when the local cluster starts).
        os.environ.setdefault("RAY_num_workers_soft_limit", str(a.num_cpus + 2))
        ray.init(num_cpus=a.num_cpus, include_dashboard=False)
    if a.checkpoint:
        checkpoint_config(a.id, a.checkpoint)

    # The scoring actors take the CPUs they ask for from the start; reading,
    # filtering and writing are light, and take none, or they would wait for
    # CPUs the actors never give back (with the actors asking for all of them).
    io = dict(num_cpus=0)
    ds = ray.data.read_json(a.input, override_num_blocks=a.blocks, **io)
    ds = score_dataset(
        ds,
        a.model,
        instruction=a.instruction,
        response=a.response,
        input=a.input_column or None,
        concurrency=a.actors,
        num_cpus=a.cpus_per_actor,
        batch_size=a.batch_size,
    )
    if a.min_alignment is not None:
        ds = ds.filter(expr=f"alignment >= {a.min_alignment!r}", **io)
    ds.write_parquet(a.output, ray_remote_args=io)


if __name__ == "__main__":
    main()
