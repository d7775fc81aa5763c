"""A toy input source, all in this one file: N tokens on a line whose keys turn by an angle. Registering its
``SourceSpec`` is all it takes for the sidebar's widgets, the URL keys, the CLI's ``--input toy:N`` and the
cache key to know it."""
import torch

from xviz.inputs import Field, SequenceInput, SourceSpec, register_source


def toy_ramp(values, seed):
    n, turn = values["tokens"], values["turn"]
    pos = torch.arange(n, dtype=torch.float32)
    q = torch.stack([torch.cos(pos / n), torch.sin(pos / n)], -1)[None, None]
    k = torch.stack([torch.cos(pos / n + turn), torch.sin(pos / n + turn)], -1)[None, None]
    v = pos[None, None, :, None].expand(1, 1, n, 2).clone()
    return SequenceInput(q, k, v, tokens=[f"t{i}" for i in range(n)], positions=pos.long(),
                         provenance=f"toy ramp: {n} tokens, keys turned by {turn:g} ({values['label']})")


TOY = SourceSpec(
    "toy", "a toy ramp", "tokens on a line, keys turned by an angle",
    fields=(Field("tokens", "int", 16, "Tokens", "how many tokens", low=2, high=512),
            Field("turn", "float", 0.5, "Turn", "angle between a query and its key", low=0.0, high=3.2),
            Field("label", "choice", "plain", "Label", "a word for the provenance", choices=("plain", "fancy"))),
    load=toy_ramp, cli_field="tokens", seeded=False)
register_source(TOY)
