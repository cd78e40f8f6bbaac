#!/usr/bin/env bash
# Rebuild the bundled demo model from nothing: synthesize its data, train it (rerun to resume), ship it,
# and measure it. Every step is idempotent: existing audio is reused, training resumes from
# runs/demo/last.pt and runs/demo2/last.pt, the evaluation resumes from its results.jsonl.
#
#   scripts/train_demo.sh data      # the training, validation and test sets (≈ 10 min on 2 cores)
#   scripts/train_demo.sh train     # train (configs/demo.yaml, two stages), resumable; --threads 1 on a busy machine
#   scripts/train_demo.sh ship      # copy runs/demo2/model.nemo to the package's bundled model
#   scripts/train_demo.sh eval      # the README's WER / language-ID tables (babelcast eval)
#   scripts/train_demo.sh streaming # streamed chunk by chunk: streaming metrics, and the same transcripts as eval's
#   scripts/train_demo.sh finetune  # the README's fine-tuning table (pt-BR, left out of training); REPLAY=100 …
#   scripts/train_demo.sh samples   # samples/: one held-out test utterance per trained language
set -euo pipefail
cd "$(dirname "$0")/.."
bc=${BABELCAST:-.venv/bin/babelcast}
langs=en-US,de-DE,es-US,it-IT,pl-PL,cs-CZ  # trained; pt-BR is held out for the fine-tuning demo
bundled=src/babelcast/assets/babelcast-demo.nemo

data() {
    # Training voices and sentences only (the test split's are disjoint, see docs/evaluation.md);
    # half clean, half with reverberation / band-limiting / noise, each with its own prosody seed.
    $bc data synth --langs $langs --n 1500 --split train --seed 0 --out data/demo/train_clean
    $bc data synth --langs $langs --n 1500 --split train --seed 1 --augment --out data/demo/train_aug
    $bc data synth --langs $langs --n 30 --split train --seed 99 --out data/demo/val
    $bc data synth --langs pt-BR --n 800 --split train --seed 0 --out data/demo/pt-BR-train
    $bc data synth --langs pt-BR --n 30 --split train --seed 99 --out data/demo/pt-BR-val
    # Held out: test-split sentences spoken by test-split voices.
    $bc data synth --langs $langs --n 50 --split test --seed 0 --out data/demo/test
    $bc data synth --langs pt-BR --n 50 --split test --seed 0 --out data/demo/pt-BR-test
}

case "${1:-}" in
    data) data ;;
    train)
        shift
        # Stage 1 (session 5): 3,400 steps from scratch into runs/demo.
        $bc train configs/demo.yaml "$@"
        # Stage 2 (session 6): a second warmup + cosine cycle of 4,400 steps from stage 1's model, with a
        # fresh AdamW and fresh CTC / phoneme heads (--init-from keeps only what the .nemo holds).
        # Each stage resumes from its own last.pt; a finished stage only re-exports its model.
        $bc train configs/demo.yaml --init-from runs/demo/model.nemo --out-dir runs/demo2 --max-steps 4400 "$@" ;;
    ship) mkdir -p "$(dirname $bundled)" && cp runs/demo2/model.nemo $bundled && ls -l $bundled ;;
    eval)
        # Offline mode at each latency gives the streaming tokens (tests/test_streaming_equals_offline.py)
        # in a fraction of the time.
        $bc eval data/demo/test/manifest.jsonl --model $bundled --latency 80,320,560,1120 \
            --lang-mode both --mode offline --out-dir runs/demo-eval --fresh
        # The same decodes scored by characters, to show how near the misspelt words are.
        $bc eval data/demo/test/manifest.jsonl --model $bundled --latency 80,1120 --lang-mode given \
            --mode offline --cer-langs ${langs//-[A-Z][A-Z]/} --out-dir runs/demo-eval-cer --fresh ;;
    streaming)
        # The first 10 test utterances per language streamed chunk by chunk at 80 and 1120 ms, with the
        # streaming metrics; then the count of transcripts equal to `eval`'s offline ones (run eval first).
        $bc eval data/demo/test/manifest.jsonl --model $bundled --latency 80,1120 --lang-mode given \
            --mode streaming --max-per-lang 10 --out-dir runs/demo-eval-streaming --fresh
        .venv/bin/python - <<'PY'
import json
key = lambda r: (r["utt"], r["lang_mode"], r["latency_ms"])
offline = {key(r): r["hypothesis"] for r in map(json.loads, open("runs/demo-eval/results.jsonl", encoding="utf-8"))}
streamed = [json.loads(line) for line in open("runs/demo-eval-streaming/results.jsonl", encoding="utf-8")]
same = sum(offline[key(r)] == r["hypothesis"] for r in streamed)
print(f"streaming == offline: {same} of {len(streamed)} transcripts")
PY
        ;;
    finetune)
        # pt-BR has a prompt slot and tokenizer pieces but no training audio. Fine-tune on 800 pt-BR
        # utterances plus REPLAY (default 300) per trained language, so the others are not forgotten,
        # then score pt-BR and the trained languages at 80 ms, language given, before and after.
        export REPLAY=${REPLAY:-300}
        ft=runs/ft/replay-$REPLAY
        .venv/bin/python - <<'PY'
import json, os
from pathlib import Path
per_lang, rows = {}, []
for line in open("data/demo/train_clean/manifest.jsonl", encoding="utf-8"):
    row = json.loads(line)
    if per_lang.setdefault(row["lang"], 0) < int(os.environ["REPLAY"]):
        per_lang[row["lang"]] += 1
        rows.append({**row, "audio_filepath": "../train_clean/" + row["audio_filepath"]})
folder = Path(f"data/demo/replay-{os.environ['REPLAY']}")
folder.mkdir(parents=True, exist_ok=True)
(folder / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
PY
        score() {  # $1 model, $2 run folder
            $bc eval data/demo/pt-BR-test/manifest.jsonl data/demo/test/manifest.jsonl --model "$1" --latency 80 \
                --lang-mode given --mode offline \
                --out-dir "$2" --fresh
        }
        score $bundled runs/ft/before
        $bc finetune --model $bundled --train data/demo/pt-BR-train/manifest.jsonl \
            --train data/demo/replay-$REPLAY/manifest.jsonl --val data/demo/pt-BR-val/manifest.jsonl \
            --out $ft/demo-pt-BR.nemo --steps 300 --lr 5e-4 --batch-duration 64 --precision bf16 \
            --joint-chunk 0 --val-latency 80
        score $ft/demo-pt-BR.nemo $ft/after ;;
    samples)  # test-split sentences and voices, never trained on; references in samples/manifest.jsonl
        .venv/bin/python - <<'PY'
import json, shutil
from pathlib import Path
chosen = {"en-US": 6, "de-DE": 32, "es-US": 21, "it-IT": 0, "pl-PL": 1, "cs-CZ": 5}
rows = [json.loads(line) for line in open("data/demo/test/manifest.jsonl", encoding="utf-8")]
out = Path("samples")
out.mkdir(exist_ok=True)
with open(out / "manifest.jsonl", "w", encoding="utf-8") as f:
    for lang, index in chosen.items():
        row = next(r for r in rows if r["lang"] == lang and f"_{index:06d}_" in r["audio_filepath"])
        name = f"{lang}.wav"
        shutil.copyfile(Path("data/demo/test") / row["audio_filepath"], out / name)
        keep = {k: row[k] for k in ("duration", "text", "target_lang", "lang", "voice")}
        f.write(json.dumps({"audio_filepath": name, **keep}, ensure_ascii=False) + "\n")
PY
        ;;
    *) echo "usage: $0 data|train|ship|eval|finetune|samples" >&2; exit 2 ;;
esac
