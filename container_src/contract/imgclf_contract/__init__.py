"""The imgclf image's contract, stated once for the image and the launcher alike (no dependencies, no torch):

- `platform`: SageMaker's names: the job's files and folders, the environment variables of training and serving;
- `hyperparameters`: what the built-in trainer accepts (`SPECS`) and the parser it trains with (`Hyperparameters`);
- `layout`: how it finds its data (splits as channels or subfolders, one folder per class) and what it refuses;
- `metrics`: the metric lines it prints and the regexes that read them;
- `errors`: what a refusal raises (`ContractError` and its kinds), its message naming the fix;
- `judging`: a model's headline figures on a labelled test split, and the promotion rule that compares two models.
"""

from imgclf_contract import errors, hyperparameters, judging, layout, metrics, platform

__all__ = ["errors", "hyperparameters", "judging", "layout", "metrics", "platform"]
