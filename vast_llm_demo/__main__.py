"""``python -m vast_llm_demo [--endpoint NAME] [--api openai|tgi] [--model auto|smollm2|fake]``:
the same as ``vast-llm demo``."""

import sys

from vast_llm.cli import main

sys.exit(main(["demo", *sys.argv[1:]]))
