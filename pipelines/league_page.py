"""RUN_DIR/league.html: one self-contained page for a league (pipelines/league.py), drawn with the
dashboard's own helpers (plotly.js inlined, so it opens from disk with no server and no network):
every entrant's exploitability curve with its 95% band on one chart and the floor beside them (what an exact
Nash policy reads with the same samples), the cross-play heatmap of the final policies, the style mix of every
entrant's rounds, and a table ranked by final exploitability with the plug-in beside it."""
from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go

from pipelines.dashboard.page import page_html, write_page
from pipelines.dashboard.plots import COLOURS, band, cycle, layout
from pipelines.league_records import Estimate, League

STYLE_COLOURS = {"bold": COLOURS[3], "calm": COLOURS[0], "witty": COLOURS[1], "none": "#bbb"}


def _ci(e: Estimate | None) -> str:
    return "–" if e is None else f"{e.mean:.3f} [{e.ci_low:.3f}, {e.ci_high:.3f}]"


def exploitability_chart(league: League) -> go.Figure:
    fig = go.Figure()
    for r, colour in zip(league.entrants, cycle(COLOURS, len(league.entrants))):
        xs = [p.round for p in r.rounds]
        e = [p.exploitability for p in r.rounds]
        band(fig, xs, [x.ci_low for x in e], [x.ci_high for x in e], colour, f"{r.name} 95% CI", r.name,
             showlegend=False)
        fig.add_scatter(x=xs, y=[x.mean for x in e], mode="lines+markers", name=r.name, legendgroup=r.name,
                        line={"color": colour}, customdata=[[x.ci_low, x.ci_high] for x in e],
                        hovertemplate="round %{x}: %{y:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}]"
                                      f"<extra>{html.escape(r.name)}</extra>")
    # every entrant's eval has the same prompts and samples (the league checks it): one floor for all
    measured = next((r for r in league.entrants if r.rounds[-1].floor is not None), None)
    if measured:
        fig.add_scatter(x=[p.round for p in measured.rounds], y=[p.floor for p in measured.rounds], mode="lines",
                        name="floor: what an exact Nash policy reads",
                        line={"color": "grey", "dash": "dash", "width": 1})
    fig.update_layout(yaxis={"rangemode": "tozero"})
    return layout(fig, list(range(league.rounds + 1)), "Exploitability per round (0 = Nash; bands: 95% CI)",
                  "max_c E P(c ≻ y) − ½")


def crossplay_chart(league: League) -> go.Figure:
    xp = league.cross_play
    z = [[w.mean for w in row] for row in xp.winrate]
    text = [[f"{w.mean:.2f}" for w in row] for row in xp.winrate]
    hover = [[f"{html.escape(a)} ≻ {html.escape(b)}: {_ci(w)}" for b, w in zip(xp.policies, row)]
             for a, row in zip(xp.policies, xp.winrate)]
    fig = go.Figure(go.Heatmap(z=z, x=xp.policies, y=xp.policies, text=text, texttemplate="%{text}",
                               customdata=hover, hovertemplate="%{customdata}<extra></extra>", zmin=0, zmax=1,
                               zmid=0.5, colorscale="RdBu", colorbar={"title": "win rate"}))
    fig.update_yaxes(autorange="reversed")
    return layout(fig, None, "Cross-play of the final policies: row ≻ column (oracle, eval prompts)",
                  "policy", xtitle="opponent")


def style_chart(league: League) -> go.Figure:
    """Each entrant's style mix round by round, stacked to 1: a cycling mix shows as shifting colours."""
    fig = go.Figure()
    x = [[r.name for r in league.entrants for _ in r.rounds], [str(p.round) for r in league.entrants for p in r.rounds]]
    for style, colour in STYLE_COLOURS.items():
        fig.add_bar(x=x, y=[p.style_mix.get(style, 0.0) for r in league.entrants for p in r.rounds], name=style,
                    marker={"color": colour})
    fig.update_layout(barmode="stack", yaxis={"range": [0, 1], "tickformat": ".0%"})
    return layout(fig, None, "Style mix of the eval samples, per entrant and round", "share of samples",
                  xtitle="entrant / round")


def ranking_table(league: League) -> str:
    by_x = {n: i + 1 for i, n in enumerate(league.by_crossplay)}
    head = ("rank", "entrant", "final exploitability [95% CI]", "plug-in", "quality part", "style part",
            "win rate vs initial [95% CI]", "mean cross-play win rate (rank)", "final style mix b/c/w/none",
            "mean quality")
    rows = []
    for i, name in enumerate(league.by_exploitability, start=1):
        r = next(e for e in league.entrants if e.name == name)
        last = r.rounds[-1]
        mix = " / ".join(f"{last.style_mix.get(s, 0.0):.2f}" for s in STYLE_COLOURS)
        plugin = "–" if last.plugin is None else f"{last.plugin:.3f}"
        cells = (i, html.escape(name), _ci(last.exploitability), plugin, f"{last.quality_part:.3f}",
                 f"{last.style_part:.3f}", _ci(last.winrate_vs_initial), f"{r.mean_crossplay:.3f} ({by_x[name]})", mix,
                 f"{last.mean_quality:.2f}")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    floor = league.entrants[0].rounds[-1].floor if league.entrants else None
    note = "" if floor is None else (f"<p>Floor: an exact Nash policy reads {floor:.3f} with the same eval prompts "
                                     "and samples (the estimate is unbiased: 0 in expectation).</p>")
    return (f"<h2>Ranked by final (round {league.rounds}) exploitability</h2><table id='league-ranking'><tr>"
            + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>" + note)


def build_league_page(league: League, out: Path) -> Path:
    charts = [("chart-league-exploitability", exploitability_chart(league)),
              ("chart-league-crossplay", crossplay_chart(league)), ("chart-league-style", style_chart(league))]
    names = ", ".join(html.escape(f"{r.name} ({r.algorithm})") for r in league.entrants)
    intro = (f"{len(league.entrants)} entrants ({names}), rounds 0-{league.rounds} from one initial policy, seed "
             f"{league.seed}. Exploitability: how much the arena's best response beats a policy (0 at a Nash "
             "policy). Cross-play: P(row ≻ column) from the oracle on every pair of eval samples at a prompt, "
             "95% intervals over prompts (hover).")
    page = page_html("selfplay league", "selfplay league", intro, charts, ranking_table(league), "",
                     {"DASHBOARD_ROUNDS": league.rounds, "LEAGUE_ENTRANTS": [r.name for r in league.entrants]})
    return write_page(out, page, "league page")
