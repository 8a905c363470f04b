"""Sampler quality per network evaluation: KID of one trained pipeline's samples against a reference folder, for
each solver, step count and thresholding choice, with the time per image.

    python benchmarks/bench_samplers.py --pipeline runs/ddpm-figures --reference data/figures32 --num_images 200

Every configuration samples the same seeds with the pipeline's (EMA) UNet; the reference's features are cached
(`toolkit.metrics`). Prints JSON and a table, best KID first.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

CONFIGS = ("ddpm:1000", "ddim:50", "ddim:20", "dpm:20", "dpm:20:raw", "unipc:20", "unipc:20:raw", "dpm:50", "ddim:100")


def scheduler_for(spec: str, train_config: dict):
    """`name:steps[:raw]`: raw turns the multistep solvers' dynamic thresholding off."""
    from toolkit.sampling import make_scheduler

    name, steps, *rest = spec.split(":")
    scheduler = make_scheduler(name, train_config)
    if rest == ["raw"]:
        scheduler = type(scheduler).from_config(scheduler.config, thresholding=False)
    return scheduler, int(steps)


def main() -> None:
    import torch

    from toolkit.ddpm.generate import load_pipeline
    from toolkit.images import list_image_files
    from toolkit.metrics.inception import InceptionFeatures
    from toolkit.metrics.scores import kid
    from toolkit.metrics.sets import default_cache, embed, load_folder
    from toolkit.sampling import generate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--num_images", type=int, default=200)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pipe = load_pipeline(args.pipeline)
    unet = pipe.unet.eval()
    size = unet.config.sample_size
    extractor = InceptionFeatures()
    ref_root = Path(args.reference)
    ref = load_folder(ref_root, list_image_files(ref_root), size, extractor, cache_dir=default_cache())
    rows = []
    for spec in args.configs.split(","):
        scheduler, steps = scheduler_for(spec, pipe.scheduler.config)
        start = time.perf_counter()
        images = generate(unet, scheduler, args.num_images, num_inference_steps=steps, seed=args.seed,
                          batch_size=50)  # (N, H, W, 3) uint8
        seconds = time.perf_counter() - start
        samples = embed(spec, list(images), extractor)
        mean, std = kid(samples.features, ref.features)
        rows.append({"config": spec, "steps": steps, "kid": mean, "kid_std": std,
                     "ms_per_image": 1000 * seconds / args.num_images})
        print(f"{spec}: KID x1000 {1000 * mean:.1f} ± {1000 * std:.1f}, {rows[-1]['ms_per_image']:.0f} ms/image",
              flush=True)
    rows.sort(key=lambda r: r["kid"])
    print(json.dumps({"pipeline": args.pipeline, "reference": args.reference, "num_images": args.num_images,
                      "resolution": size, "threads": torch.get_num_threads(), "rows": rows}, indent=1))
    print("| sampler | steps | KID x1000 | ms / image |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['steps']} | {1000 * r['kid']:.1f} ± {1000 * r['kid_std']:.1f} | "
              f"{r['ms_per_image']:.0f} |")


if __name__ == "__main__":
    main()
