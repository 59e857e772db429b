"""What a PATH given to `pytest-ckpt audit` is: a checkpoint file, a safetensors file, an SB3
zip, a DCP folder, or a folder of them (HF Trainer, accelerate, Lightning layouts). Above both
`audit` (files) and `distributed` (DCP folders), so neither imports the other."""
