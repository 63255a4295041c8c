"""The network's attention as our passes run it: SDPA's fused kernel, or blocked bf16 on CPU.

HTDemucs's transformer calls ``nn.MultiheadAttention`` (batch first, no masks, no weights
asked for). In eval mode PyTorch sends self-attention down a "fast path" whose CPU kernel
materialises every head's full attention matrix (8 x 2688 x 2688 floats per frequency layer);
the ordinary path goes through ``scaled_dot_product_attention``. Our passes give each of the
model's attention modules :class:`PassAttention`'s forward (its class is swapped, so its
parameters, state dict and outputs stay those of the module), which never takes the fast
path, and picks the kernel by where and in what precision it runs:

- float32, or any CUDA run: SDPA (on CPU its flash kernel, which keeps no full matrix);
- bf16 on a CPU with AMX (``amx_bf16``): SDPA. Its flash kernel packs bf16 blocks for
  AMX's tiles: on a 2-core AMX Xeon, 16.9 ms for 8 heads x 2688 x 2688 x 64 against
  :func:`blocked_attention`'s 81 ms, and an htdemucs_ft sub-model's bf16 chunk in 765 ms
  against 883 ms (``bench/compiled.py``'s shapes), its results closer to float32's too.
- bf16 on other CPUs (AVX-512 BF16 without AMX): :func:`blocked_attention`. There SDPA's
  flash kernel runs bf16 no faster than float32 (about 155 GFLOP/s on this project's Zen 4
  machine, for either dtype), while batched bf16 matrix products over blocks of queries
  reach about 220 GFLOP/s on the same shapes, the softmax included. With the network held
  in bf16 (:mod:`separation.bf16`), a forward pass of an htdemucs_ft sub-model over one
  7.8 s chunk took 1.75 s against autocast's 2.13 s with SDPA, in one run of
  ``bench/compiled.py --variants eager,passes``.

:func:`cpu_bf16_attention` is the rule.

Importing this module does not import torch; :func:`use_pass_attention` does.
"""

from __future__ import annotations

from typing import Any

from separation.cpu import has_amx_bf16

# Queries per block in the blocked kernel: one block's scores (8 heads x 256 x 2688 bf16,
# 11 MB) stay near the caches, and the products are large enough to run at full rate.
BLOCK_QUERIES = 256


def blocked_attention(q: Any, k: Any, v: Any, block: int = BLOCK_QUERIES) -> Any:
    """Softmax attention of ``q`` over ``k``/``v``, ``block`` queries at a time.

    Args:
        q: queries, ``(..., Lq, D)``.
        k: keys, ``(..., Lk, D)``.
        v: values, ``(..., Lk, Dv)``.
        block: queries per block; each block's scores ``(..., block, Lk)`` exist at once.

    Returns:
        ``softmax(q k^T / sqrt(D)) v``, ``(..., Lq, Dv)``, in ``q``'s dtype. The scores and
        probabilities are kept in that dtype between the products (the softmax itself
        accumulates in float32), so bf16 inputs differ from SDPA's float32-accumulating
        kernel by about the rounding of bf16.
    """
    import torch

    if q.shape[-2] == 0:
        return q.new_empty(*q.shape[:-1], v.shape[-1])
    # Contiguous operands once: the products would otherwise copy their strided views
    # (the heads are views of the projections) again for every block.
    scaled = (q * q.shape[-1] ** -0.5).contiguous()
    key_t = k.contiguous().transpose(-1, -2)
    v = v.contiguous()
    blocks = [
        torch.matmul(
            torch.softmax(torch.matmul(scaled[..., start : start + block, :], key_t), -1), v
        )
        for start in range(0, q.shape[-2], block)
    ]
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=-2)


def cpu_bf16_attention(cpuinfo: str | None = None) -> str:
    """The kernel bf16 attention runs on this CPU (see the module's docstring).

    Args:
        cpuinfo: a ``/proc/cpuinfo`` text to judge; None judges this machine's.

    Returns:
        ``"sdpa"`` where the CPU has AMX's bf16 tiles, else ``"blocked"``.
    """
    return "sdpa" if has_amx_bf16(cpuinfo) else "blocked"


def use_pass_attention(model: Any) -> int:
    """Give every ``nn.MultiheadAttention`` in ``model`` :class:`PassAttention`'s forward.

    Args:
        model: a loaded network (an HTDemucs, or any module tree).

    Returns:
        How many attention modules were switched (0 for a model without attention, or one
        already switched).
    """
    from torch import nn

    switched = 0
    for module in model.modules():
        if type(module) is nn.MultiheadAttention:
            module.__class__ = _pass_attention_class()
            switched += 1
    return switched


_CLASS: Any = None


def _pass_attention_class() -> Any:
    """:class:`PassAttention`, defined on first use so that importing this module does not
    import torch."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _define_pass_attention()
    return _CLASS


def _define_pass_attention() -> Any:
    import torch
    from torch import nn
    from torch.nn import functional as F

    class PassAttention(nn.MultiheadAttention):
        """``nn.MultiheadAttention`` whose mask-free, weight-free calls (all of HTDemucs's)
        run SDPA, or :func:`blocked_attention` for bf16 on CPU; other calls run the
        original forward."""

        def forward(
            self,
            query: torch.Tensor,
            key: torch.Tensor,
            value: torch.Tensor,
            key_padding_mask: torch.Tensor | None = None,
            need_weights: bool = True,
            attn_mask: torch.Tensor | None = None,
            average_attn_weights: bool = True,
            is_causal: bool = False,
        ) -> tuple[torch.Tensor, torch.Tensor | None]:
            plain = (
                self.batch_first
                and not need_weights
                and key_padding_mask is None
                and attn_mask is None
                and not is_causal
                and not (self.training and self.dropout > 0)
                and self._qkv_same_embed_dim
                and self.bias_k is None
                and not self.add_zero_attn
                and query.dim() == 3
            )
            if not plain:
                return super().forward(
                    query,
                    key,
                    value,
                    key_padding_mask=key_padding_mask,
                    need_weights=need_weights,
                    attn_mask=attn_mask,
                    average_attn_weights=average_attn_weights,
                    is_causal=is_causal,
                )
            embed = self.embed_dim
            weight, bias = self.in_proj_weight, self.in_proj_bias
            if query is key and key is value:
                q, k, v = F.linear(query, weight, bias).chunk(3, dim=-1)
            elif key is value:
                q = F.linear(query, weight[:embed], None if bias is None else bias[:embed])
                k, v = F.linear(key, weight[embed:], None if bias is None else bias[embed:]).chunk(
                    2, dim=-1
                )
            else:
                parts = [
                    F.linear(
                        x,
                        weight[i * embed : (i + 1) * embed],
                        None if bias is None else bias[i * embed : (i + 1) * embed],
                    )
                    for i, x in enumerate((query, key, value))
                ]
                q, k, v = parts
            heads = (self.num_heads, self.head_dim)
            # (batch, length, embed) -> (batch, heads, length, head_dim)
            q, k, v = (x.unflatten(-1, heads).transpose(1, 2) for x in (q, k, v))
            if (
                q.device.type == "cpu"
                and q.dtype == torch.bfloat16
                and cpu_bf16_attention() == "blocked"
            ):
                out = blocked_attention(q, k, v)
            else:
                out = F.scaled_dot_product_attention(q, k, v)
            out = out.transpose(1, 2).flatten(-2)
            return self.out_proj(out), None

    return PassAttention
