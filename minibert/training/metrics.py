"""Classification metrics: error rate (the paper's figure), accuracy, macro-F1, per-class scores."""


def confusion_matrix(gold: list[int], predicted: list[int], num_labels: int) -> list[list[int]]:
    """matrix[g][p] = number of examples of gold class g predicted as p."""
    matrix = [[0] * num_labels for _ in range(num_labels)]
    for g, p in zip(gold, predicted, strict=True):
        matrix[g][p] += 1
    return matrix


def classification_report(gold: list[int], predicted: list[int], names: list[str]) -> dict:
    """Error, accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    A class never predicted has precision 0; a class absent from gold has recall 0 (and is still
    part of the macro average, as in scikit-learn's zero_division=0).
    """
    matrix = confusion_matrix(gold, predicted, len(names))
    per_class = {}
    for c, name in enumerate(names):
        true_positive = matrix[c][c]
        predicted_c = sum(matrix[g][c] for g in range(len(names)))
        support = sum(matrix[c])
        precision = true_positive / predicted_c if predicted_c else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    correct = sum(matrix[c][c] for c in range(len(names)))
    accuracy = correct / len(gold) if gold else 0.0
    return {
        "error": 1.0 - accuracy,
        "accuracy": accuracy,
        "macro_f1": sum(c["f1"] for c in per_class.values()) / len(names),
        "per_class": per_class,
        "confusion_matrix": matrix,
        "count": len(gold),
    }
