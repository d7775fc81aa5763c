"""The token-text view (what BertViz users expect): the sentence written out twice, exact attention and the
approximation; hovering (or clicking) a token in either row shades every key by its weight in that row, so
what a word attends to, and what the approximation loses, is read off the text itself.

A pure function returning a self-contained HTML fragment (no network, no external script): the weights of
one head travel as JSON, the shading is a few lines of inline JavaScript. For N ≤ ``MAX_TOKENS``.
"""
from __future__ import annotations

import html
import json
from typing import Any, Sequence

import numpy as np

from .base import to_numpy

MAX_TOKENS = 256  # two N×N float rows per token: 2·256² weights ≈ 1 MB of JSON at 3 decimals


def _rows(a: Any) -> list:
    m = to_numpy(a).astype(np.float64)
    while m.ndim > 2:
        m = m[0]
    top = np.abs(m).max(axis=-1, keepdims=True)
    return np.round(m / np.where(top > 0, top, 1.0), 3).tolist()  # each row relative to its largest |weight|


def token_view_html(tokens: Sequence[str], exact: Any, approx: Any, *, names=("exact", "approx"),
                    query: int = 0, font_size: int = 15) -> str:
    """HTML for one head: tokens in two rows (exact, approximate); the hovered token's row of weights shades
    the keys (blue for positive, red for negative implicit weights), the chosen ``query`` shaded first."""
    n = len(tokens)
    if n > MAX_TOKENS:
        raise ValueError(f"the token view draws at most {MAX_TOKENS} tokens; this input has {n}.")
    data = json.dumps({"e": _rows(exact), "a": _rows(approx), "q": int(query)})
    spans = "".join(f'<span class="t" data-i="{i}">{html.escape(str(t))}</span> ' for i, t in enumerate(tokens))
    rows = "".join(f'<div class="row" data-m="{m}"><div class="lab">{html.escape(label)}</div>{spans}</div>'
                   for m, label in (("e", names[0]), ("a", names[1])))
    return f"""<div id="xv-tokens" style="font-family:sans-serif;font-size:{font_size}px;line-height:2.1">
<style>
#xv-tokens .row{{margin:4px 0 10px 0}} #xv-tokens .lab{{font-size:{max(11, font_size - 3)}px;color:#555}}
#xv-tokens .t{{padding:2px 3px;border-radius:4px;cursor:pointer;white-space:pre}}
#xv-tokens .t.q{{outline:2px solid #ff00ff}}
</style>
{rows}
<div style="font-size:{max(11, font_size - 3)}px;color:#555">Hover or click a token: every key is shaded by the
weight that token's query gives it (relative to the row's largest), in exact attention and in the approximation.</div>
<script>
(function() {{
  const D = {data};
  const root = document.getElementById("xv-tokens");
  function shade(i) {{
    root.querySelectorAll(".row").forEach(function(row) {{
      const w = D[row.dataset.m][i];
      row.querySelectorAll(".t").forEach(function(s) {{
        const x = w[+s.dataset.i];
        const c = x >= 0 ? "31,119,180" : "214,39,40";
        s.style.background = "rgba(" + c + "," + Math.min(1, Math.abs(x)).toFixed(3) + ")";
        s.classList.toggle("q", +s.dataset.i === i);
      }});
    }});
  }}
  root.querySelectorAll(".t").forEach(function(s) {{
    s.addEventListener("mouseenter", function() {{ shade(+s.dataset.i); }});
    s.addEventListener("click", function() {{ shade(+s.dataset.i); }});
  }});
  shade(D.q);
}})();
</script></div>"""
