# Part of every stage id: bump it when a change under train/ changes what a stage produces (loss, masking, packing,
# optimizer, saving), so old checkpoints are never silently reused by a newer trainer.
TRAINER_VERSION = 2
