"""How fast the tiny LLM learns to bind a multiple-choice option to its letter (in-context
retrieval), the step the embedded backbone lacks for the benchmark (README, Known limits).

    python benchmarks/bench_letter_binding.py [--style named|tight|copy|repeat|all] [--steps 1500]
        [--batch-size 128] [--lr 3e-3] [--heads 4 --kv-heads 2] [--init BACKBONE_DIR]
        [--init-scale 1] [--prompt-loss] [--aux repeat --aux-share 0.5]

Each drill is four one-word options in the benchmark's "X. option" lines and a reply naming one
of them: "It is <option> (<letter>)" (`named`, the backbone's answer style) or
"It is <option>(<letter>)" (`tight`: the option one token before the letter), or all four in a
random order, "It is <option> (<letter>), <option> (<letter>), ..." (`all`: four bindings per
drill; the first is scored, before elimination helps). `copy` is the control: a random six-word
list, then the same list again (a fixed-offset copy, which a positional head solves); `repeat`
the same with 4-10 words (the offset varies: an induction head's task, every copied word a
target). `--aux STYLE` mixes a second style into every batch (`--aux-share` of it), e.g.
`--aux repeat` to see whether dense induction drills shorten the binding's plateau. Every 100
steps it prints the teacher-forced accuracy on 512 held-out drills: of the letter, or of the
copied words after the first. The model is the tiny preset's LLM (random, or a trained
backbone's with `--init`), text only, trained with AdamW (warmup 50, cosine) on these drills
alone, on the reply's tokens (`--prompt-loss`: on the option lines too, as pretraining on text
would: predicting each line's letter needs the previous line's, the feature binding reads).
Output: one line per 100 steps (style, step, loss, accuracy, seconds).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

LETTERS = "ABCD"
STYLES = ("named", "tight", "copy", "repeat", "all")
WARMUP = 50
SEQ_BUCKETS, TARGET_BUCKETS = (32, 48, 64), (8, 16, 32, 48, 64)


def vocabulary() -> list[str]:
    """The synthetic world's one-word factor values and emotion words, and "happy", "angry"
    (20 words; the README's figures were measured with these)."""
    from vaemotion_jax.embedded import synth
    words = {w for values in synth.FACTORS.values() for v in values for w in str(v).split()}
    return sorted(words | set(synth.EMOTION_WORDS) | {"happy", "angry"})


def drill(rng: np.random.Generator, style: str, words: list[str]) -> tuple[str, str]:
    """(prompt, reply) of one drill."""
    if style in ("copy", "repeat"):
        listed = " ".join(rng.choice(words, 6 if style == "copy" else int(rng.integers(4, 11))))
        return listed + "\n", listed
    options = list(rng.choice(words, 4, replace=False))
    k = int(rng.integers(4))
    lines = "\n".join(f"{letter}. {o}" for letter, o in zip(LETTERS, options))
    if style == "all":
        order = rng.permutation(4)
        return lines + "\n", "It is " + ", ".join(f"{options[j]} ({LETTERS[j]})" for j in order)
    gap = " " if style == "named" else ""
    return lines + "\n", f"It is {options[k]}{gap}({LETTERS[k]})"


def encode(tok, prompt: str, reply: str, prompt_loss: bool = False) -> dict:
    """Token ids, 1-D positions (as M-RoPE's three equal rows) and every reply token a target
    (every token after the first with `prompt_loss`)."""
    p, a = tok.encode(prompt), tok.encode(reply)
    ids = np.asarray(p + a, np.int32)
    t = np.arange(1 if prompt_loss else len(p), len(ids))
    return {"input_ids": ids,
            "position_ids": np.repeat(np.arange(len(ids))[:, None], 3, 1).astype(np.int32),
            "target_index": (t - 1).astype(np.int32), "target_ids": ids[t]}


def scored(target_ids: np.ndarray, mask: np.ndarray, style: str, letters: set[int]) -> list[int]:
    """Target positions that count: the letter, or the copied words after the first."""
    if style in ("copy", "repeat"):
        return [j for j in range(1, len(target_ids)) if mask[j]]
    hits = [j for j in range(len(target_ids)) if mask[j] and target_ids[j] in letters]
    return hits[:1] if style == "all" else hits[-1:]   # "all": the first, before any elimination


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--style", choices=STYLES, default="named")
    p.add_argument("--aux", choices=STYLES, default=None,
                   help="a second drill style mixed into every batch (scored: --style only)")
    p.add_argument("--aux-share", type=float, default=0.5, help="its share of each batch")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--init", default="", help="a trained backbone dir to start from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompt-loss", action="store_true",
                   help="train on the prompt's tokens too (the option lines), as pretraining does")
    p.add_argument("--init-scale", type=float, default=1.0,
                   help="multiply a random model's matrices (std 0.02) by this")
    args = p.parse_args(argv)
    if args.steps <= WARMUP:
        p.error(f"--steps must exceed the {WARMUP} warm-up steps, got {args.steps}")

    from vaemotion_jax.checkpoints.qwen2_5_vl import load_qwen2_5_vl
    from vaemotion_jax.embedded.backbone import lm_loss, pad_chats
    from vaemotion_jax.embedded.tokenizer import default_tiny_tokenizer_dir
    from vaemotion_jax.models.qwen2_5_vl import config as qwen_config
    from vaemotion_jax.models.qwen2_5_vl.model import Qwen2_5_VL, causal_mask, init_params
    from vaemotion_jax.processing.tokenizer import cached_tokenizer

    tok = cached_tokenizer(default_tiny_tokenizer_dir())
    qwen = qwen_config.tiny()
    if args.init:
        if (args.heads, args.kv_heads) != (qwen.text.num_heads, qwen.text.num_kv_heads):
            p.error("--heads / --kv-heads change a random model only, not --init's")
        if args.init_scale != 1.0:
            p.error("--init-scale scales a random model only, not --init's")
        loaded, params = load_qwen2_5_vl(args.init)
        qwen = loaded.config
    else:
        if (args.heads, args.kv_heads) != (qwen.text.num_heads, qwen.text.num_kv_heads):
            half = qwen.text.hidden_size // args.heads // 2   # M-RoPE sections in the tiny
            t = half // 4                                     # preset's proportions (4, 6, 6)
            qwen = dataclasses.replace(qwen, text=dataclasses.replace(
                qwen.text, num_heads=args.heads, num_kv_heads=args.kv_heads,
                mrope_section=(t, (half - t) // 2, half - t - (half - t) // 2)))
        params = nn.meta.unbox(init_params(qwen, jax.random.key(args.seed)))
        params = jax.tree.map(lambda w: w * args.init_scale if w.ndim >= 2 else w, params)
    params = {k: v for k, v in params.items() if k != "visual"}
    model = Qwen2_5_VL(qwen)
    words = vocabulary()
    letters = {tok.encode(k)[0] for k in LETTERS}
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(optax.warmup_cosine_decay_schedule(
        0.0, args.lr, WARMUP, args.steps, args.lr * 0.05)))
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, batch):
        loss, grads = jax.value_and_grad(lm_loss)(params, batch, model)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    @jax.jit
    def predictions(params, batch):
        def run(m):
            h, _ = m.decode(m.embed(batch["input_ids"], None),
                            jnp.moveaxis(batch["position_ids"], -1, 0),
                            causal_mask(batch["attention_mask"]))
            return m.logits(jnp.take_along_axis(h, batch["target_index"][..., None], 1))
        return jnp.argmax(model.apply({"params": params}, method=run), -1)

    held_rng = np.random.default_rng(99)
    held = [encode(tok, *drill(held_rng, args.style, words)) for _ in range(512)]

    def accuracy(params) -> float:
        hits = []
        for s in range(0, len(held), 128):
            b = pad_chats(held[s:s + 128], qwen.pad_token_id, SEQ_BUCKETS, TARGET_BUCKETS)
            pred = np.asarray(predictions(params, b))
            for i in range(len(held[s:s + 128])):
                js = scored(b["target_ids"][i], b["target_mask"][i], args.style, letters)
                hits.append(float(np.mean(pred[i, js] == b["target_ids"][i, js])))
        return float(np.mean(hits))

    rng = np.random.default_rng(args.seed)
    started = time.time()
    print(f"style {args.style}: {len(words)} words, heads {qwen.text.num_heads} / kv "
          f"{qwen.text.num_kv_heads}, {'from ' + args.init if args.init else 'random init'}",
          flush=True)
    for i in range(args.steps):
        n_aux = int(round(args.aux_share * args.batch_size)) if args.aux else 0
        styles = [args.style] * (args.batch_size - n_aux) + [args.aux] * n_aux
        batch = pad_chats([encode(tok, *drill(rng, s, words), args.prompt_loss) for s in styles],
                          qwen.pad_token_id, SEQ_BUCKETS, TARGET_BUCKETS)
        params, opt, loss = step(params, opt, batch)
        if (i + 1) % 100 == 0:
            print(f"{args.style} step {i + 1} loss {float(loss):.3f} "
                  f"accuracy {accuracy(params):.3f} ({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
