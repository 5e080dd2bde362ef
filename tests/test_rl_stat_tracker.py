import numpy as np
import pytest

from cxrl.rl.stat_tracker import PerPromptStatTracker


def test_batch_statistics_until_a_prompt_has_min_count():
    tracker = PerPromptStatTracker(buffer_size=4, min_count=3)
    rewards = np.array([1.0, 3.0, 10.0, 20.0])
    adv = tracker.update(["a", "a", "b", "b"], rewards)
    expected = (rewards - rewards.mean()) / (rewards.std() + 1e-6)
    np.testing.assert_allclose(adv, expected, rtol=1e-5)


def test_per_prompt_statistics_once_history_is_long_enough():
    tracker = PerPromptStatTracker(buffer_size=4, min_count=2)
    adv = tracker.update(["a", "a", "b", "b"], np.array([1.0, 3.0, 10.0, 30.0]))
    np.testing.assert_allclose(adv, [-1, 1, -1, 1], atol=1e-5)  # each prompt standardised on its own


def test_buffer_keeps_only_recent_rewards_and_state_round_trips():
    tracker = PerPromptStatTracker(buffer_size=2, min_count=1)
    tracker.update(["a"] * 3, np.array([1.0, 2.0, 3.0]))
    assert list(tracker.history["a"]) == [2.0, 3.0]
    restored = PerPromptStatTracker(buffer_size=2, min_count=1)
    restored.load_state_dict(tracker.state_dict())
    np.testing.assert_array_equal(
        restored.update(["a", "a"], np.array([5.0, 6.0])), tracker.update(["a", "a"], np.array([5.0, 6.0]))
    )
    with pytest.raises(ValueError, match="same config"):
        PerPromptStatTracker(buffer_size=3, min_count=1).load_state_dict(tracker.state_dict())


def test_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="one reward per prompt"):
        PerPromptStatTracker().update(["a"], np.array([1.0, 2.0]))
    with pytest.raises(ValueError):
        PerPromptStatTracker(buffer_size=0)


def test_fallback_to_batch_statistics_is_counted_and_logged(caplog):
    tracker = PerPromptStatTracker(buffer_size=4, min_count=2)
    with caplog.at_level("INFO", logger="cxrl.rl.stat_tracker"):
        tracker.update(["a", "b", "b"], np.array([1.0, 2.0, 3.0]))  # "a" has 1 reward < 2
        assert tracker.last_fallback == 1
        tracker.update(["a", "b"], np.array([1.0, 2.0]))  # both have >= 2 now
        assert tracker.last_fallback == 0
    records = [r for r in caplog.records if "batch statistics" in r.getMessage()]
    assert (
        len(records) == 1 and records[0].levelname == "WARNING" and "1 of 3 images" in records[0].getMessage()
    )
