"""The packed attention's two paths side by side, one sequence at a time: SDPA's fused CPU kernel against two
batched matmuls (``kpdd.finetune.attention.causal_matmul_attention``), forward and backward, the student's shape
(9 query heads sharing 3 key-value heads of 64).

    python benchmarks/bench_attention.py [--lengths 120 250 400 1000] [--threads 0] [--dtype bf16|fp32]

Prints each length's median milliseconds, the ratio, and the largest difference of the outputs from an fp32
reference. Run it on the allocator a training runs on, since the matmul path allocates its attention weights
afresh at every call: ``LD_PRELOAD=libjemalloc.so.2`` with ``MALLOC_CONF`` set to ``kpdd.cli.allocator.MALLOC_CONF``
(its first line says which allocator it ran on).
"""

import argparse
import statistics
import time


def milliseconds(step, repeat: int) -> float:
    for _ in range(3):
        step()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 120, 180, 250, 320, 400, 600, 1000])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores this process may use)")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from kpdd.finetune.attention import causal_matmul_attention
    from kpdd.finetune.hardware import allocator_in_use, use_torch_threads

    threads = use_torch_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    heads, kv_heads, head_dim = 9, 3, 64

    def sdpa(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    print(f"{threads} threads, {args.dtype}, {allocator_in_use()}; forward + backward, median ms of {args.repeat}")
    torch.manual_seed(0)
    for length in args.lengths:
        q, k, v = (torch.randn(1, n, length, head_dim, dtype=dtype) for n in (heads, kv_heads, kv_heads))
        reference = sdpa(q.float(), k.float(), v.float())
        grad = torch.randn(1, heads, length, head_dim, dtype=dtype)
        row = {}
        for name, attend in (("sdpa", sdpa), ("matmuls", causal_matmul_attention)):
            leaves = [t.clone().requires_grad_() for t in (q, k, v)]
            row[name] = milliseconds(lambda: attend(*leaves).backward(grad), args.repeat)
            with torch.no_grad():
                row[f"{name} error"] = (attend(q, k, v).float() - reference).abs().max().item()
        print(f"{length:5d} tokens: SDPA {row['sdpa']:7.2f} ms, matmuls {row['matmuls']:7.2f} ms, "
              f"{row['sdpa'] / row['matmuls']:.2f}x; largest error SDPA {row['sdpa error']:.4f}, "
              f"matmuls {row['matmuls error']:.4f}", flush=True)


if __name__ == "__main__":
    main()
