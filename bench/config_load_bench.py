"""How fast config text is read and validated, and how fast hostile text is refused.

Prints the best of several runs for each case, with the C (libyaml) parser and the pure-Python
fallback, so a change to the reader shows what it costs:

    .venv/bin/python bench/config_load_bench.py --repeat 5
"""

from __future__ import annotations

import argparse
import timeit
from pathlib import Path

from kubitect_core.config import ConfigError, load_config_text
from kubitect_core.config.limits import MAX_CONFIG_BYTES
from kubitect_core.config.yamlmarks import YamlProblem, parse

REPO = Path(__file__).resolve().parents[1]
SEED = (REPO / "examples" / "ha.yaml").read_text()
FULL = (REPO / "examples" / "full.yaml").read_text()
BOMB = "\n".join(['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'] + [
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]) + "\n"
FLAT = "x:\n" + "".join(f"  k{i}: v\n" for i in range(MAX_CONFIG_BYTES // 12))[: MAX_CONFIG_BYTES - 8]


def _parse(text: str, pure: bool):
    def run():
        try:
            parse(text, pure=pure)
        except YamlProblem:
            pass
    return run


def _validate(text: str):
    def run():
        try:
            load_config_text(text, "bench.yaml")
        except ConfigError:
            pass
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cases = [
        ("parse seed (C)", _parse(SEED, False), 50),
        ("parse seed (pure)", _parse(SEED, True), 10),
        ("validate seed", _validate(SEED), 20),
        ("validate full example", _validate(FULL), 20),
        ("refuse alias bomb", _parse(BOMB, False), 20),
        (f"parse {len(FLAT) // 1024} KiB flat mapping (C)", _parse(FLAT, False), 1),
        (f"parse {len(FLAT) // 1024} KiB flat mapping (pure)", _parse(FLAT, True), 1),
    ]
    for name, fn, number in cases:
        best = min(timeit.repeat(fn, number=number, repeat=args.repeat)) / number
        print(f"{name:40} {best * 1000:9.2f} ms")


if __name__ == "__main__":
    main()
