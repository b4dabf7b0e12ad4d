"""The HTML report: Table 1 (cohort), Table 2 (performance), Figs 1-3 of the study and the extras."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

import pandas as pd
from jinja2 import Environment, select_autoescape

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; } .pass { color: #1a7f37; } .fail { color: #b42318; }
</style></head><body>
<h1>{{ title }}</h1>
<p class="note">Generated {{ generated }}; cohort <b>{{ cohort }}</b>; {{ n_patients }} patients
({% for s, n in split_counts.items() %}{{ s }} {{ n }}{% if not loop.last %}, {% endif %}{% endfor %}).
Training-split scores are out-of-fold ({{ cv_folds }}-fold CV), so no training column is in-sample.
The risk threshold ({{ "%.4f"|format(threshold) }}) was chosen on the validation split (Youden index) and applied
unchanged to the test split.</p>

{% if acceptance %}
<h2>Check against the truth (synthetic cohort)</h2>
<p>Held-out patients (val + test, n = {{ acceptance.n }}): combined AUC {{ "%.3f"|format(acceptance.combined_auc) }},
oracle AUC {{ "%.3f"|format(acceptance.oracle_auc) }}, ratio {{ "%.3f"|format(acceptance.ratio) }}
(<span class="{{ 'pass' if acceptance.ratio_ok else 'fail' }}">{{ 'at least' if acceptance.ratio_ok else 'below' }}
{{ acceptance_ratio }}</span>);
combined beats Rad-sign: <span class="{{ 'pass' if acceptance.beats_rad else 'fail' }}">{{ acceptance.beats_rad }}</span>,
beats DL-sign: <span class="{{ 'pass' if acceptance.beats_dl else 'fail' }}">{{ acceptance.beats_dl }}</span>.</p>
{% endif %}

<h2>Table 1. Patient characteristics</h2>
{% if table1 %}{{ table1 | safe }}{% else %}<p class="fail">Table 1 not found ({{ table1_path }}); the cohort stage
writes it.</p>{% endif %}

<h2>Table 2. Performance of the models</h2>
<p class="note">AUC with 95 % CI by DeLong's method [stratified bootstrap, {{ n_bootstrap }} resamples]; other metrics
at each model's own Youden threshold from the validation split.</p>
{{ table2 | safe }}

<h3>Clinical variables: univariate and multivariate logistic regression (training split)</h3>
{{ clinical_table | safe }}

<h3>Feature selection: features removed by each step</h3>
{{ selection_table | safe }}

<h2>Figure 1. LASSO feature selection</h2>
{% for fig in fig1 %}<img src="{{ fig }}" alt="Figure 1 {{ loop.index }}">{% endfor %}

<h2>Figure 2. ROC curves</h2>
<img src="{{ fig2 }}" alt="Figure 2">

<h2>Figure 3. Calibration and decision curves</h2>
{% for fig in fig3 %}<img src="{{ fig }}" alt="Figure 3 {{ loop.index }}">{% endfor %}
<h3>Calibration statistics</h3>
<p class="note">Intercept: calibration-in-the-large, a in logit P(CS) = a + logit(p) (0 ideal, above 0 when the model
under-predicts).
Slope: b in logit P(CS) = a' + b logit(p) (1 ideal, below 1 when predictions are too extreme, as after overfitting).
Wald 95 % CIs of the logistic recalibration. Hosmer-Lemeshow (HL) over groups of predicted risk, referred to chi-square
on g degrees of freedom:
no score here comes from a model fitted to that patient (training scores are out-of-fold), so no g - 2; groups whose
expected count is 0 are merged into a neighbour and counted.</p>
{{ calibration_table | safe }}

<h2>Comparison of the combined model with each single model (DeLong)</h2>
{{ delong_table | safe }}

<h2>Feature importance</h2>
<img src="{{ fig_importance }}" alt="Feature importance">
{{ importance_table | safe }}

<h2>Model against readers</h2>
{% if readers_table %}
{{ readers_table | safe }}
<p class="note">Cohen's kappa between readers:</p>
{{ kappa_table | safe }}
{% for fig in fig_readers %}<img src="{{ fig }}" alt="Readers">{% endfor %}
{% else %}<p>The manifest has no reader columns.</p>{% endif %}
</body></html>
"""


def html_table(frame: pd.DataFrame | None, float_format: str = "{:.3f}") -> str:
    if frame is None or frame.empty:
        return "<p class='note'>(none)</p>"
    return frame.to_html(index=False, border=0, na_rep="-", float_format=lambda v: float_format.format(v), escape=True)


def render_report(context: Mapping[str, Any]) -> str:
    env = Environment(autoescape=select_autoescape(default=True))
    values = {"generated": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "title": "Cage subsidence: model evaluation", **context}
    return env.from_string(TEMPLATE).render(**values)
