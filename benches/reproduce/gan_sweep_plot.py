#!/usr/bin/env python3
"""CAS against epsilon for a DP-GAN sweep (gan_sweep.sh), standard library only.

    gan_sweep_plot.py ROOT [RESULTS]

Reads ROOT/eps*/eval.json (CAS, fid_mnist_classifier, real-vs-fake) and ROOT/eps*/run/metrics.json
(epsilon per accountant, steps, wall time), and writes into RESULTS (default ROOT):
cas_vs_epsilon.svg, sweep.json, sweep.md (a table with each run's sample grid side by side) and
the grids as grid_epsE.png.
"""
import json
import pathlib
import shutil
import sys


def load(root):
    rows = []
    for d in sorted(root.glob("eps*")):
        if not (d / "eval.json").exists():
            continue
        e = json.loads((d / "eval.json").read_text())
        m = json.loads((d / "run" / "metrics.json").read_text())
        eps = {x["accountant"]: x["epsilon"] for x in m["epsilons"]}
        rel = d / "synth" / "release.json"
        temperature = json.loads(rel.read_text()).get("temperature", 1.0) if rel.exists() else None
        rows.append({
            "folder": d.name,
            "target": float(d.name[3:]),
            "epsilon_rdp": eps["rdp"],
            "epsilon_pld": eps["pld"],
            "delta": m["epsilons"][0]["delta"],
            "noise_multiplier": m["config"]["noise_multiplier"],
            "discriminator_steps": m["discriminator_steps"],
            "wall_seconds": m["wall_seconds"],
            "cas": e["cas"]["test_accuracy"],
            "cas_selected_epoch": e["cas"]["selected_epoch"],
            "fid_mnist_classifier": e["fid_mnist_classifier"],
            "real_vs_fake": e["real_vs_fake_accuracy"],
            "temperature": temperature,
        })
    rows.sort(key=lambda r: r["target"])
    return rows


def svg(rows):
    w, h, left, right, top, bottom = 560, 360, 60, 20, 40, 50
    xs = [r["epsilon_rdp"] for r in rows]
    x_max = max(xs) * 1.1
    y_lo, y_hi = 0.5, 1.0
    px = lambda x: left + (w - left - right) * x / x_max
    py = lambda y: top + (h - top - bottom) * (y_hi - y) / (y_hi - y_lo)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="15">DP-GAN on MNIST: CAS against epsilon (delta 1e-5, RDP)</text>']
    for y in [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]:
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.1f}</text>')
    for x in range(0, int(x_max) + 1):
        if x % 2 == 0 or x_max < 6:
            out.append(f'<text x="{px(x):.1f}" y="{h - bottom + 16}" text-anchor="middle">{x}</text>')
    out.append(f'<line x1="{left}" x2="{w - right}" y1="{h - bottom}" y2="{h - bottom}" stroke="black"/>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{h - bottom}" stroke="black"/>')
    out.append(f'<text x="{(w + left) / 2}" y="{h - 12}" text-anchor="middle">epsilon (RDP accountant, delta 1e-5)</text>')
    out.append(f'<text x="16" y="{(h + top - bottom) / 2}" text-anchor="middle" transform="rotate(-90 16 {(h + top - bottom) / 2})">CAS (real test accuracy)</text>')
    for bar, label in [(0.95, "bar at epsilon 10: 0.95"), (0.90, "bar at epsilon 1: 0.90")]:
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{py(bar):.1f}" y2="{py(bar):.1f}" stroke="red" stroke-dasharray="6 4"/>')
        out.append(f'<text x="{w - right - 4}" y="{py(bar) - 4:.1f}" text-anchor="end" fill="red">{label}</text>')
    pts = " ".join(f"{px(r['epsilon_rdp']):.1f},{py(r['cas']):.1f}" for r in rows)
    out.append(f'<polyline points="{pts}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    for r in rows:
        out.append(f'<circle cx="{px(r["epsilon_rdp"]):.1f}" cy="{py(r["cas"]):.1f}" r="4" fill="#1f77b4"/>')
        out.append(f'<text x="{px(r["epsilon_rdp"]) + 6:.1f}" y="{py(r["cas"]) + 14:.1f}">{r["cas"]:.4f}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    root = pathlib.Path(sys.argv[1])
    results = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else root
    results.mkdir(parents=True, exist_ok=True)
    rows = load(root)
    if not rows:
        sys.exit(f"no eps*/eval.json under {root}")
    (results / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    (results / "cas_vs_epsilon.svg").write_text(svg(rows))
    lines = ["| epsilon RDP / PLD | sigma | D steps | train wall | CAS | fid_mnist_classifier | real-vs-fake |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['epsilon_rdp']:.2f} / {r['epsilon_pld']:.2f} | {r['noise_multiplier']:.4f} | {r['discriminator_steps']:,} | "
                     f"{r['wall_seconds']:.0f} s | {r['cas']:.4f} | {r['fid_mnist_classifier']:.1f} | {r['real_vs_fake']:.4f} |")
    lines += ["", "| " + " | ".join(f"epsilon {r['target']:g}" for r in rows) + " |", "|" + "---|" * len(rows)]
    cells = []
    for r in rows:
        src = root / r["folder"] / "synth" / "grid.png"
        name = f"grid_eps{r['target']:g}.png"
        if src.exists():
            if src.resolve() != (results / name).resolve():
                shutil.copyfile(src, results / name)
            cells.append(f"![epsilon {r['target']:g}]({name})")
        else:
            cells.append("(no grid)")
    lines.append("| " + " | ".join(cells) + " |")
    (results / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[: len(rows) + 2]))
    print(f"wrote {results / 'cas_vs_epsilon.svg'}, sweep.md, sweep.json")


if __name__ == "__main__":
    main()
