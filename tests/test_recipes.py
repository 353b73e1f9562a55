"""recipes/: the shipped model's recipe (multi_corpus.sh) and the previous one (shipped_model.sh)
stay runnable and their synthetic vocabulary stays clean.

The recipes take 45 minutes to 2 hours, so the suite does not run them; it checks what rots silently: every
`kws` command in the script must parse with today's command line, and the espeak-ng word list
must hold none of the task's words and none of the words the transfer and enrolment
benchmarks hold out (a word the backbone was trained on would inflate those figures).
"""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from bnnkws.app import cli
from bnnkws.app.bench import enroll as bench_enroll
from bnnkws.kws.data import vocab
from bnnkws.kws.data import WORDS12

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "shipped_model.sh"  # the previous shipped model (the subset alone)
MULTI = REPO / "recipes" / "multi_corpus.sh"  # the shipped model: every corpus (issue 38)
WORDS = REPO / "recipes" / "synth165_words.txt"


def recipe_commands(script=RECIPE) -> list[list[str]]:
    """The `kws ...` invocations of the script, continuation lines joined, shell variables and
    command substitutions replaced by placeholders."""
    text = script.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        m = re.search(r"(?:^|\|\|\s*|&&\s*)kws\s+(.*)$", line.strip())
        if not m or line.strip().startswith("#"):
            continue
        body = re.sub(r'"\$\(cat [^)]*\)"', "apple,baby", m.group(1))
        body = re.sub(r'"\$\{\w+\[@\]\}"', "", body)  # optional options (resume, seed...), unset
        for var, value in (("delta", "0.2"), ("epochs", "3"), ("per_epoch", "6000")):
            body = body.replace(f'"${var}"', value)  # numeric variables
        body = re.sub(r'\$\{?(\w+)\}?', r"PLACEHOLDER_\1", body)
        out.append(shlex.split(body))
    return out


def test_recipe_is_valid_bash_and_every_kws_command_parses():
    subprocess.run(["bash", "-n", str(RECIPE)], check=True)
    cmds = recipe_commands()
    assert [c[0] for c in cmds] == ["synth", "train", "eval", "export"]
    parser = cli.build_parser()
    for argv in cmds:
        args = parser.parse_args(argv)  # SystemExit (a failed test) on an unknown option
        assert args.func is not None
    train = parser.parse_args(cmds[1])
    assert train.aux_vocab and train.aux_synth and train.noise_dirs and train.epochs == 45


def test_synthetic_vocabulary_holds_no_task_or_held_out_word():
    words = [w.strip() for w in WORDS.read_text().split(",") if w.strip()]
    assert len(words) == len(set(words)) == 165
    forbidden = set(WORDS12) | set(vocab.DEFAULT_HOLDOUT) | set(bench_enroll.V1_WORDS) \
        | {p for w in bench_enroll.WAKE_WORDS for p in w.split()} - {"hey"}
    leaked = sorted(set(words) & forbidden)
    assert leaked == [], f"{WORDS}: benchmark or task words in the training vocabulary: {leaked}"
    assert all(re.fullmatch(r"[a-z]+", w) for w in words), "one plain lower-case word each"


def test_multi_corpus_recipe_parses_and_trains_on_every_corpus():
    subprocess.run(["bash", "-n", str(MULTI)], check=True)
    cmds = recipe_commands(MULTI)
    assert [c[0] for c in cmds] == ["data", "synth", "train", "eval", "export"]
    parser = cli.build_parser()
    for argv in cmds:
        assert parser.parse_args(argv).func is not None
    train = parser.parse_args(cmds[2])
    assert len(train.data) == 2 and train.class_balance > 0 and train.jit_compile
    # speechocean762's words train the auxiliary heads only, a fresh part of them each epoch;
    # `_unknown_` comes from Speech Commands words, as in the scored split.
    assert any("so762" in d for d in train.aux_synth) and train.aux_only_per_epoch > 0
    assert not any("so762" in d for d in train.aux_data)
    # SEED=N: another init on the same speakers' split (what a replicate must keep fixed)
    text = MULTI.read_text()
    assert 'seed=(--seed "$SEED" --split-seed 0)' in text and '"${seed[@]}"' in text
    seeded = parser.parse_args(cmds[2] + ["--seed", "1", "--split-seed", "0"])
    assert (seeded.seed, seeded.split_seed) == (1, 0)
