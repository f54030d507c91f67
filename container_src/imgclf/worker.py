"""One of several training processes, as `train` starts them under torch.distributed.run."""

from imgclf.cli import train_process

if __name__ == "__main__":
    train_process()
