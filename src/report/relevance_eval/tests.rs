use super::*;

#[test]
fn auc_counts_wins_and_half_ties() {
    assert_eq!(roc_auc(&[3.0, 4.0], &[1.0, 2.0]), 1.0);
    assert_eq!(roc_auc(&[1.0, 2.0], &[3.0, 4.0]), 0.0);
    assert_eq!(roc_auc(&[1.0], &[1.0]), 0.5);
    // 3 > 2, 3 > 1, 1 = 1 (half), 1 < 2: (1 + 1 + 0.5 + 0) / 4.
    assert_eq!(roc_auc(&[3.0, 1.0], &[2.0, 1.0]), 0.625);
}

#[test]
fn threshold_at_fpr_keeps_at_most_the_target_share() {
    let pos = [1.0, 2.0, 3.0, 4.0];
    let neg = [0.0, 0.5, 1.5, 2.5, 3.5];
    // Keeping at most 40% of neg (2 of 5) needs t > 1.5: the midpoint 1.75.
    let (t, tpr, fpr) = threshold_at_fpr(&pos, &neg, 0.4);
    assert_eq!((t, tpr, fpr), (1.75, 0.75, 0.4));
    // 0%: above every negative.
    let (t, tpr, fpr) = threshold_at_fpr(&pos, &neg, 0.0);
    assert_eq!((t, tpr, fpr), (3.75, 0.25, 0.0));
}

#[test]
fn best_threshold_separates_clean_split() {
    let (t, tpr, fpr) = best_threshold(&[0.5, 0.6, 0.7], &[0.1, 0.2]);
    assert!((0.2..=0.5).contains(&t), "{t}");
    assert_eq!((tpr, fpr), (1.0, 0.0));
}
