"""Recipes pin the model commit; a branch such as "main" warns (it moves under a running fleet)."""

from __future__ import annotations

import pytest


def test_shipped_recipes_pin_a_commit_and_main_warns(tmp_path):
    import warnings

    from enginescope.recipes import RECIPES_DIR, load_recipe
    from enginescope.recipes.validate import UnpinnedRevisionWarning

    pinned = {}
    for path in sorted(RECIPES_DIR.glob("*.toml")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            recipe = load_recipe(path)
        pinned[path.stem] = not any(issubclass(w.category, UnpinnedRevisionWarning) for w in caught)
        assert pinned[path.stem] == (len(recipe.model.revision) == 40), path
    assert pinned and all(pinned.values()), pinned
    text = (RECIPES_DIR / "llama-3.1-8b-h100.toml").read_text()
    unpinned = tmp_path / "llama.toml"
    unpinned.write_text(
        text.replace('revision = "0e9e39f249a16976918f6564b8830bc894c89659"', 'revision = "main"')
    )
    with pytest.warns(
        UnpinnedRevisionWarning, match=r"llama.toml: model.revision: 'main' is not a commit hash"
    ):
        load_recipe(unpinned)
