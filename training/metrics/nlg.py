"""Text similarity as report-generation papers compute it: BLEU-1..4, METEOR, ROUGE-L, CIDEr.

The scorers are the reference implementations of the COCO caption evaluation
(``pycocoevalcap``): BLEU (Papineni et al. 2002; corpus level, closest reference length),
METEOR 1.5 (Denkowski and Lavie 2014; the Java jar shipped in the package), ROUGE-L (Lin 2004;
LCS F-measure with beta 1.2, averaged over reports) and CIDEr-D style CIDEr (Vedantam et al.
2015; document frequencies from the reference corpus itself). This is what R2Gen
(Chen et al. 2020) and its successors call in ``compute_scores``.

Text is prepared before scoring with one of:

- ``"r2gen"`` (default): R2Gen's report cleaning (lower case, punctuation removed, sentences
  joined with ``" . "``), reproduced from its ``clean_report_iu_xray``; this is what published
  IU X-Ray and MIMIC-CXR numbers use.
- ``"ptb"``: the Stanford PTB tokenizer of pycocoevalcap (COCO captioning convention; Java).
- ``"none"``: lower case and whitespace only.

METEOR runs a Java process: English with exact, stem, synonym and paraphrase modules as in
pycocoevalcap; Spanish with exact and stem modules only, because the package ships no Spanish
paraphrase table (Spanish METEOR is therefore not comparable with English METEOR). Without Java,
METEOR is reported as missing rather than guessed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from training.exceptions import MetricError

logger = logging.getLogger(__name__)

TOKENIZERS: tuple[str, ...] = ("r2gen", "ptb", "none")
EMPTY_TOKEN = "emptyreportplaceholder"
METRIC_NAMES: tuple[str, ...] = (
    "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"
)

# R2Gen's sentence cleaner, character class kept verbatim (":-\[" is a range in it).
_R2GEN_STRIP = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")


def clean_report_r2gen(report: str) -> str:
    """R2Gen's ``clean_report_iu_xray``: the text the published IU X-Ray scores are computed on."""
    text = report
    for old, new in (
        ("..", "."), ("..", "."), ("..", "."), ("1. ", ""), (". 2. ", ". "), (". 3. ", ". "),
        (". 4. ", ". "), (". 5. ", ". "), (" 2. ", ". "), (" 3. ", ". "), (" 4. ", ". "),
        (" 5. ", ". "),
    ):
        text = text.replace(old, new)
    sentences = text.strip().lower().split(". ")

    def clean(sentence: str) -> str:
        s = sentence.replace('"', "").replace("/", "").replace("\\", "").replace("'", "")
        return _R2GEN_STRIP.sub("", s.strip().lower())

    tokens = [clean(s) for s in sentences if clean(s)]
    return " . ".join(tokens) + " ."


def _tokenize(texts: Mapping[str, str], tokenizer: str) -> dict[str, list[str]]:
    if tokenizer == "r2gen":
        return {k: [clean_report_r2gen(v)] for k, v in texts.items()}
    if tokenizer == "none":
        return {k: [" ".join(v.lower().split())] for k, v in texts.items()}
    if tokenizer == "ptb":
        if shutil.which("java") is None:
            raise MetricError("the PTB tokenizer needs Java: install a JRE (java on PATH)")
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tokenized: dict[str, list[str]] = PTBTokenizer().tokenize(
            {k: [{"caption": v}] for k, v in texts.items()}
        )
        return tokenized
    raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")


class MeteorScorer:
    """METEOR 1.5 through the jar shipped with pycocoevalcap, for English or Spanish.

    The protocol (``SCORE`` lines then one ``EVAL`` line) is pycocoevalcap's; only the language
    options differ. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, lang: str = "en") -> None:
        if lang not in ("en", "es"):
            raise ValueError(f"METEOR language must be 'en' or 'es', got {lang!r}")
        if shutil.which("java") is None:
            raise MetricError("METEOR needs Java: install a JRE (java on PATH)")
        import pycocoevalcap.meteor.meteor as meteor_module

        self.lang = lang
        jar_dir = Path(meteor_module.__file__).parent
        cmd = ["java", "-jar", "-Xmx2G", "meteor-1.5.jar", "-", "-", "-stdio", "-l", lang, "-norm"]
        if lang == "es":
            cmd += ["-m", "exact stem"]
        self._proc = subprocess.Popen(
            cmd,
            cwd=jar_dir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )
        self._lock = threading.Lock()

    def _line(self, text: str) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(f"{text}\n".encode())
        self._proc.stdin.flush()
        line = self._proc.stdout.readline().decode().strip()
        if not line:
            err = self._proc.stderr.read().decode() if self._proc.stderr else ""
            raise MetricError(f"METEOR stopped unexpectedly: {err.strip()[:500]}")
        return line

    def compute_score(
        self, gts: Mapping[str, list[str]], res: Mapping[str, list[str]]
    ) -> tuple[float, list[float]]:
        """Corpus METEOR and per-report scores, as ``pycocoevalcap.meteor.Meteor`` returns."""
        if gts.keys() != res.keys():
            raise ValueError("references and hypotheses must have the same ids")
        with self._lock:
            stats = []
            for key in gts:
                hyp = res[key][0].replace("|||", "").replace("  ", " ")
                refs = " ||| ".join(r.replace("|||", "") for r in gts[key])
                stats.append(self._line(f"SCORE ||| {refs} ||| {hyp}"))
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._proc.stdin.write(("EVAL ||| " + " ||| ".join(stats) + "\n").encode())
            self._proc.stdin.flush()
            scores = [float(self._proc.stdout.readline().strip()) for _ in stats]
            total = float(self._proc.stdout.readline().strip())
        return total, scores

    def close(self) -> None:
        if self._proc.poll() is None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> MeteorScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def nlg_scores(
    references: Sequence[str],
    hypotheses: Sequence[str],
    *,
    lang: str = "en",
    tokenizer: str = "r2gen",
    meteor: bool = True,
) -> dict[str, Any]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of ``hypotheses`` against ``references``.

    One reference per hypothesis, in the same order. Returns the corpus scores by name
    (:data:`METRIC_NAMES`); ``METEOR`` is ``None`` when ``meteor=False`` or Java is missing, and
    ``"meteor_error"`` then says why.
    """
    if len(references) != len(hypotheses):
        raise ValueError(
            f"references and hypotheses differ in length ({len(references)} vs {len(hypotheses)})"
        )
    if not references:
        raise ValueError("nothing to score: no reference")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    ids = [str(i) for i in range(len(references))]
    gts = _tokenize(dict(zip(ids, references, strict=True)), tokenizer)
    res = _tokenize(dict(zip(ids, hypotheses, strict=True)), tokenizer)
    # pycocoevalcap's ROUGE divides by the hypothesis length; an empty report becomes one token
    # that matches nothing, so it scores (about) 0 instead of crashing or matching a ".".
    empty = {k for k, h in zip(ids, hypotheses, strict=True) if not h.strip()}
    res = {k: [EMPTY_TOKEN if k in empty else v[0]] for k, v in res.items()}

    out: dict[str, Any] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n, value in enumerate(bleu, start=1):
        out[f"BLEU-{n}"] = float(value)
    out["METEOR"] = None
    if meteor:
        try:
            with MeteorScorer(lang) as scorer:
                out["METEOR"], _ = scorer.compute_score(gts, res)
        except MetricError as exc:
            logger.warning("METEOR not computed: %s", exc)
            out["meteor_error"] = str(exc)
    rouge, _ = Rouge().compute_score(gts, res)
    out["ROUGE-L"] = float(rouge)
    cider, _ = Cider().compute_score(gts, res)
    out["CIDEr"] = float(cider)
    out["tokenizer"] = tokenizer
    out["n"] = len(references)
    return out
