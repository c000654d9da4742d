"""A tiny streaming voice-activity detector: one call is one 10 ms step of 16 kHz audio.

    (frame [N, 160], state [N, 32]) -> (speech [N, 2] logits silence/speech, stateN [N, 32])

A learned filter bank (16 pairs of 160-tap filters, energy of each pair, log-compressed) feeds
an nn.GRUCell whose new state is both the input of the classifier and the state fed back at the next step.
nn.GRUCell exports as plain MatMul/Add/Sigmoid/Tanh/Mul ops that onnxruntime quantizes (nn.GRU would export
as one float GRU op). About 10 k parameters.
"""
import torch
from torch import nn

FRAME = 160  # 10 ms at 16 kHz
BANDS = 16
HIDDEN = 32
FLOOR = 1e-6  # energy floor (-60 dB) under the log: digital silence stays finite


class StreamingVAD(nn.Module):
    def __init__(self, bands: int = BANDS, hidden: int = HIDDEN):
        super().__init__()
        # a learned filter bank in pairs (like an STFT's cosine and sine rows): a band's energy is a^2 + b^2
        self.filters_a = nn.Linear(FRAME, bands, bias=False)
        self.filters_b = nn.Linear(FRAME, bands, bias=False)
        self.cell = nn.GRUCell(bands, hidden)
        self.head = nn.Linear(hidden, 2)

    def features(self, frame: torch.Tensor) -> torch.Tensor:
        """Log energy per band, [..., 160] -> [..., bands]."""
        a, b = self.filters_a(frame), self.filters_b(frame)
        return torch.log(a * a + b * b + FLOOR)

    def forward(self, frame: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.cell(self.features(frame), state)
        return self.head(state), state


def build() -> nn.Module:
    """Architecture only; edgekit loads the trained weights with weights_only=True."""
    return StreamingVAD()
