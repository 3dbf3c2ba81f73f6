"""Synthetic product titles in the official BIO layout, for demos and tests.

SYNTHETIC DATA: the titles are assembled from small word lists by a seeded random
generator. They look like JD titles (brands, products, model numbers with latin
letters and digits, sizes, colours, spaces, nested-looking phrases such as 无线 vs
无线鼠标) but are not real and say nothing about model quality on real data.

``python -m jd_ner.demo`` rewrites ``data/01_raw/synthetic_{train,test}.txt``.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from jd_ner.text.bio import format_submission, spans_to_tags

# Type names follow the JD numbering for the types they imitate.
BRANDS = ["小米", "华为", "OPPO", "美的", "海尔", "联想", "罗技", "绿联", "公牛", "九阳",
          "苏泊尔", "飞利浦", "Anker", "倍思", "南极人", "恒源祥", "得力", "晨光", "vivo"]
PRODUCTS = ["手机壳", "数据线", "充电器", "蓝牙耳机", "电饭煲", "保温杯", "鼠标", "键盘",
            "插线板", "台灯", "毛巾", "袜子", "笔记本", "中性笔", "手机支架", "电水壶",
            "剃须刀", "无线鼠标", "充电头", "收纳盒", "T恤", "U盘"]
FUNCTIONS = ["快充", "防摔", "降噪", "无线", "静音", "防水", "蓝牙", "加厚", "折叠"]
SCENES = ["家用", "办公", "车载", "户外", "学生", "宿舍"]
AUDIENCES = ["男士", "女士", "儿童", "男女通用", "情侣"]
COLOURS = ["黑色", "白色", "红色", "深空灰", "天蓝色", "玫瑰金", "透明"]
MATERIALS = ["硅胶", "不锈钢", "纯棉", "陶瓷", "皮革", "ABS"]
FILLERS = ["新款", "2024款", "官方旗舰店", "【包邮】", "正品", "送礼", "/", "热卖", "+", "-"]

TYPES = {"brand": "1", "product": "4", "scene": "5", "model": "13", "colour": "16",
         "spec": "18", "function": "11", "audience": "40", "material": "12"}


def _model_number(rng: random.Random) -> str:
    letters = "".join(rng.choice("ABCDEFGHKMRSTXZ") for _ in range(rng.randint(1, 2)))
    digits = str(rng.randint(5, 9999))
    return rng.choice([f"{letters}{digits}", f"{letters}-{digits}", f"{letters}{digits}Pro"])


def _spec(rng: random.Random) -> str:
    return rng.choice([
        f"{rng.randint(1, 3)}.{rng.randint(0, 9)}m", f"{rng.choice([250, 350, 500, 750])}ml",
        f"{rng.choice([16, 32, 64, 128])}G",
        f"{rng.randint(1, 9)}*{rng.randint(10, 30)}*{rng.randint(10, 40)}",
        f"{rng.choice([10, 50, 100])}个", f"{rng.choice([18, 20, 33, 65])}W",
    ])


def _title(rng: random.Random) -> tuple[str, list[tuple[int, int, str]]]:
    parts: list[tuple[str, str | None]] = []
    if rng.random() < 0.8:
        parts.append((rng.choice(BRANDS), "brand"))
    if rng.random() < 0.3:
        parts.append((rng.choice(FILLERS), None))
    if rng.random() < 0.6:
        parts.append((rng.choice(FUNCTIONS), "function"))
    parts.append((rng.choice(PRODUCTS), "product"))
    optional = [(lambda: _model_number(rng), "model", 0.6), (lambda: _spec(rng), "spec", 0.5),
                (lambda: rng.choice(COLOURS), "colour", 0.5),
                (lambda: rng.choice(MATERIALS), "material", 0.3),
                (lambda: rng.choice(SCENES), "scene", 0.4),
                (lambda: rng.choice(AUDIENCES), "audience", 0.3),
                (lambda: rng.choice(FILLERS), None, 0.3)]
    rng.shuffle(optional)
    for make, kind, p in optional:
        if rng.random() < p:
            parts.append((make(), kind))
    if rng.random() < 0.3:  # a second product, as in "手机壳 送 数据线"
        parts.append(("送", None))
        parts.append((rng.choice(PRODUCTS), "product"))
    text, spans = "", []
    for piece, kind in parts:
        if text and rng.random() < 0.45:
            text += " "
        if kind is not None:
            spans.append((len(text), len(text) + len(piece) - 1, TYPES[kind]))
        text += piece
    return text, spans


def generate(n_titles: int, seed: int) -> list[tuple[str, list[tuple[int, int, str]]]]:
    """``n_titles`` distinct synthetic titles with their spans."""
    rng = random.Random(seed)
    seen: dict[str, list] = {}
    while len(seen) < n_titles:
        text, spans = _title(rng)
        seen.setdefault(text, spans)
    return list(seen.items())


def write_demo(out_dir: Path, n_train: int = 320, n_test: int = 120, seed: int = 2022) -> None:
    """The synthetic train file (BIO) and test file (one title per line).

    Test titles come from the same generator as the training titles, so they are as long
    as those; tests that need a title longer than a model window build their own.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    titles = generate(n_train + n_test, seed)
    train, test = titles[:n_train], titles[n_train:]
    bio = format_submission([t for t, _ in train], [spans_to_tags(len(t), s) for t, s in train])
    (out_dir / "synthetic_train.txt").write_text(bio, encoding="utf-8")
    (out_dir / "synthetic_test.txt").write_text("\n".join(t for t, _ in test) + "\n",
                                                encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/01_raw"))
    parser.add_argument("--train", type=int, default=320)
    parser.add_argument("--test", type=int, default=120)
    parser.add_argument("--seed", type=int, default=2022)
    args = parser.parse_args()
    write_demo(args.out, args.train, args.test, args.seed)


if __name__ == "__main__":
    main()
