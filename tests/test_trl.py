"""The `preferences` datasets are TRL preference data: TRL's DPOTrainer trains on a round's file as
written, applying the chat template, and tokenises each pair as the project's trainer does
(selfplay.logprobs.encode_pairs) but for the chat template's text after the end-of-turn token."""
import math

import pytest

from selfplay.records import PreferencePair, pair_to_row, row_to_pair

PROMPTS = ["Tell me about the ocean.", "Describe the forest.", "Tell me about the river.", "Describe the stone."]
RESPONSES = ["wave tide coral boldly", "pine", "wave gently", "owl moss"]


def test_pair_rows_are_conversational_and_read_back():
    p = PreferencePair("Tell me about the ocean.", "wave tide", "pine", "7", 0.8, 0.2, target=0.9, round=2,
                       chosen_idx=0, rejected_idx=3)
    row = pair_to_row(p)
    assert row["prompt"] == [{"role": "user", "content": "Tell me about the ocean."}]
    assert row["chosen"] == [{"role": "assistant", "content": "wave tide"}]
    assert row["rejected"] == [{"role": "assistant", "content": "pine"}]
    assert (row["prompt_id"], row["chosen_winrate"], row["target"], row["round"], row["chosen_idx"]) == ("7", 0.8, 0.9, 2, 0)
    assert row_to_pair(row) == p
    legacy = {**row, "prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}   # run dirs from before
    assert row_to_pair(legacy) == p


@pytest.fixture(scope="module")
def round_prefs(tmp_path_factory):
    """Round 1's preferences, made by the real stage from oracle-judged samples of the arena prompts."""
    import datasets

    from judges.base import preference_matrices
    from judges.oracle import OracleJudge
    from pipelines import stages
    from selfplay.config import Config
    from selfplay.records import JudgedPrompt, to_rows

    run = tmp_path_factory.mktemp("run")
    responses = [RESPONSES[i:] + RESPONSES[:i] for i in range(len(PROMPTS))]
    mats = preference_matrices(OracleJudge(), PROMPTS, responses)
    judged = [JudgedPrompt(str(i), p, r, [len(x.split()) for x in r], m.tolist(), "oracle")
              for i, (p, r, m) in enumerate(zip(PROMPTS, responses, mats))]
    datasets.Dataset.from_list(to_rows(judged)).save_to_disk(str(run / "judgments"))
    info = stages.preferences(run / "judgments", Config(run_dir=str(run)), 1, [], run / "preferences")
    assert info["pairs"] == len(PROMPTS)
    return run / "preferences"


def test_stage_rows_read_back_as_the_pairs(round_prefs):
    import datasets
    rows = datasets.load_from_disk(str(round_prefs)).to_list()
    pairs = [row_to_pair(r) for r in rows]
    assert [p.prompt for p in pairs] == PROMPTS and all(isinstance(p.chosen, str) for p in pairs)
    assert all(pair_to_row(p) == r for p, r in zip(pairs, rows))


def after_end_of_turn(ids: list[int], eot: int) -> tuple[list[int], list[int]]:
    """(ids up to and including the last end-of-turn token, what follows it)."""
    cut = len(ids) - ids[::-1].index(eot)
    return ids[:cut], ids[cut:]


def test_trl_dpo_trains_on_a_round_and_tokenises_like_the_project(round_prefs, tmp_path):
    trl = pytest.importorskip("trl")
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfplay.data import resolve_builtin
    from selfplay.logprobs import encode_pairs

    policy = resolve_builtin("builtin:arena")
    tok = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy)
    ds = datasets.load_from_disk(str(round_prefs))
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), max_steps=2, per_device_train_batch_size=2, report_to=[],
                         bf16=False, use_cpu=True, logging_steps=1, save_strategy="no", learning_rate=1e-3)
    trainer = trl.DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)

    # (ii) TRL 1.16's tokenised columns: prompt_ids, chosen_ids, rejected_ids
    processed = trainer.train_dataset
    eot = tok.eos_token_id   # the arena template's end of turn, <|im_end|>, is the tokenizer's EOS
    tail = tok.apply_chat_template([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                                   tokenize=False).rsplit(tok.eos_token, 1)[1]
    assert tail == "\n"   # the template's separator before a next turn, rendered after the last one too
    for row in processed:
        pair = row_to_pair(row)
        for side in ("chosen", "rejected"):
            ids, attention, mask = encode_pairs(tok, [pair.prompt], [getattr(pair, side)])
            ids, mask = ids[0][attention[0].bool()].tolist(), mask[0][attention[0].bool()].tolist()
            ours_prompt = [t for t, m in zip(ids, mask) if m == 0]
            ours_response = [t for t, m in zip(ids, mask) if m == 1]
            assert row["prompt_ids"] == ours_prompt
            theirs, extra = after_end_of_turn(row[f"{side}_ids"], eot)
            # Equal up to and including the end-of-turn token. TRL also scores what the template renders
            # after it ("\n"), which the policy never samples (generation stops at EOS): the project is right.
            assert theirs == ours_response
            assert tok.decode(extra) == tail

    # The same ids on both sides once TRL's tokens after the end of turn are dropped (README's recipe).
    trimmed = processed.map(lambda r: {s: after_end_of_turn(r[s], eot)[0] for s in ("chosen_ids", "rejected_ids")})
    row = trimmed[0]
    pair = row_to_pair(row)
    ids, attention, _ = encode_pairs(tok, [pair.prompt], [pair.chosen])
    assert row["prompt_ids"] + row["chosen_ids"] == ids[0][attention[0].bool()].tolist()

    # (i) two DPO steps on the round's file as written, finite loss
    torch.manual_seed(0)
    out = trainer.train()
    assert trainer.state.global_step == 2
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses) and math.isfinite(out.training_loss)
