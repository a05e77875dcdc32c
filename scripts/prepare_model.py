"""Prepare the embedded default policy: convert SmolLM2-135M-Instruct's GGUF to safetensors.

    python scripts/prepare_model.py            # once; later loads take about a second
    python scripts/prepare_model.py --force    # convert again

The folder is ``$RLM_CACHE/SmolLM2-135M-Instruct`` (``~/.cache/rlm`` by default).
"""

from __future__ import annotations

import argparse
import logging
import time

from rlm.models import load_causal_lm, prepare_default_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="convert again even if cached")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    folder = prepare_default_model(force=args.force)
    model, _ = load_causal_lm("default")
    params = sum(p.numel() for p in model.parameters())
    print(
        f"default model ready in {folder} ({params / 1e6:.0f}M parameters, "
        f"{time.perf_counter() - start:.1f} s)"
    )


if __name__ == "__main__":
    main()
