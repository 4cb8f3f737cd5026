"""Place names for streets, compounds and institutions (pinyin, Nanjing flavour)."""

from __future__ import annotations

import numpy as np

BASES = (
    "Zhongshan",
    "Hanzhong",
    "Jiankang",
    "Taiping",
    "Hongwu",
    "Longpan",
    "Huju",
    "Caochang",
    "Shigu",
    "Mochou",
    "Jinling",
    "Qinhuai",
    "Xuanwu",
    "Gulou",
    "Baixia",
    "Jiangdong",
    "Yunnan",
    "Hankou",
    "Shanxi",
    "Ninghai",
    "Guangzhou",
    "Beijing",
    "Zhujiang",
    "Changjiang",
    "Huaihai",
    "Yangzi",
    "Fengtai",
    "Longjiang",
    "Xinmofan",
    "Zhongyang",
    "Jianye",
    "Shuiximen",
    "Hanximen",
    "Tianjin",
    "Hubei",
    "Dinghuai",
    "Yingtian",
    "Jiqing",
    "Chengxian",
    "Wuding",
    "Zhonghua",
    "Yuhua",
    "Anpin",
    "Pingshi",
    "Shengzhou",
    "Fuzi",
    "Baijia",
    "Ganjia",
    "Meiyuan",
    "Dashiba",
    "Cuiping",
    "Lanqi",
    "Zijin",
    "Qixia",
    "Maigao",
    "Xiaoling",
    "Chaotian",
    "Yuejiang",
    "Shizi",
    "Qingliang",
)
SUFFIX = ("1st", "2nd", "3rd", "4th", "5th", "6th", "7th", "8th", "9th")


def street_names(g: np.random.Generator, n: int) -> tuple[list[str], list[str]]:
    """n north-south names ('... Lu') and n east-west names ('... Jie'), all distinct."""
    order = g.permutation(len(BASES))
    bases = [BASES[i] for i in order]
    half = len(bases) // 2
    vb, hb = bases[:half], bases[half:]

    def expand(pool: list[str], kind: str) -> list[str]:
        out = []
        for k in range(n):
            base = pool[k % len(pool)]
            rep = k // len(pool)
            out.append(f"{base} {kind}" if rep == 0 else f"{base} {SUFFIX[(rep - 1) % len(SUFFIX)]} {kind}")
        return out

    return expand(vb, "Lu"), expand(hb, "Jie")


COMPOUND = {
    "residential": ("Garden", "Residence", "New Village", "Court", "Homes"),
    "commercial": ("Plaza", "Mall", "Market", "Commercial Centre"),
    "office": ("Tower", "Business Centre", "Financial Centre"),
    "industrial": ("Works", "Factory", "Logistics Park"),
    "school": ("Primary School", "Middle School", "Experimental School", "Foreign Language School"),
    "hospital": ("People's Hospital", "Hospital of TCM", "Maternity and Child Hospital", "Children's Hospital"),
    "utility": ("Utility Works",),
}


def compound_names(g: np.random.Generator, uses: np.ndarray) -> np.ndarray:
    """One name per parcel, e.g. 'Hongwu Garden', 'Jiankang People's Hospital'."""
    base_idx = g.integers(0, len(BASES), len(uses))
    kind_idx = g.integers(0, 100, len(uses))
    out = np.empty(len(uses), dtype=object)
    for i, (u, b, k) in enumerate(zip(uses, base_idx, kind_idx, strict=True)):
        kinds = COMPOUND.get(u)
        out[i] = f"{BASES[b]} {kinds[k % len(kinds)]}" if kinds else ""
    return out
