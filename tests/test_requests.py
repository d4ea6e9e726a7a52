"""Requests and two-part questions read as the questions the reader was taught (generate/requests.py); the engine
side is in tests/test_answer.py."""

import pytest

from generate.requests import plain_question
from serve.answer import Answer
from serve.app_views import format_answer


@pytest.mark.parametrize("asked, read", [
    ("I want to enable/disable light effect. How can I do this?", "How do I enable/disable light effect?"),
    ("I need to create an account for my TV. How do I do that?", "How do I create an account for my TV?"),
    ("Please instruct how to record any program?", "How do I record any program?"),
    ("Please provide some instructions on how to schedule program?", "How do I schedule program?"),
    ("Can you please explain how to schedule recording?", "How do I schedule recording?"),
    ("Explain the steps how to do Schedule Recording from the guide screen?",
     "How do I do Schedule Recording from the guide screen?"),
    ("Explain the procedure for cancelling Scheduled Viewing?", "How do I cancel Scheduled Viewing?"),
    ("Can you explain connecting with a component cable?", "How do I connect with a component cable?"),
    ("Can you explain Ambient Mode?", "What is Ambient Mode?"),
    ("Can you explain the connection notes for computers?", "What are the connection notes for computers?"),
    ("Can you describe Smart Hub Settings?", "What is Smart Hub Settings?"),  # a name: its last word decides nothing
    ("I don't know about Ambient Mode. Can you explain briefly?", "What is Ambient Mode?"),
    ("I want to know about the source option in the Smart Hub. What is it?",
     "What is the source option in the Smart Hub?"),
])
def test_a_request_is_read_as_the_question_it_asks(asked, read):
    assert plain_question(asked) == read


@pytest.mark.parametrize("asked", [
    "How do I change the clock?",  # already a question
    "Can I select Motion Lighting?",  # a yes/no question, not a request
    "What is the mileage rate for my own car?",
    "Please instruct how to record any program and is there any way to stop the recording?",  # two requests
    "Can you explain why the screen gets darker?",  # a why: left as asked
    "I want to adjust the screen brightness. Can you explian about that?",  # no rule fits exactly
    "Is there a relationship between homocysteine and vitiligo?",
])
def test_anything_else_stays_as_asked(asked):
    assert plain_question(asked) == asked


def test_the_chat_shows_which_question_a_request_was_read_as():
    answer = Answer("Can you explain Ambient Mode?", "A screen mode [1]", "rag", None, [], False, {},
                    warnings=["read as 'What is Ambient Mode?'"])
    assert format_answer(answer, timings=False).startswith("*Read as 'What is Ambient Mode?'*\n\nA screen mode [1]")
    plain = Answer("What is Ambient Mode?", "A screen mode [1]", "rag", None, [], False, {})
    assert format_answer(plain, timings=False).startswith("A screen mode [1]")
