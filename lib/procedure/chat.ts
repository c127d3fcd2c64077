/**
 * A model's own conversation, from the chat template its GGUF carries (`tokenizer.chat_template`),
 * rendered with @huggingface/jinja (the Jinja of transformers.js) into prompt parts.
 *
 * User text never goes through the template: each message's text and images are passed to it as
 * private-use sentinels, and the rendered string is split back at them, so what the template wrote
 * becomes template parts (tokenized with special tokens parsed) and the user's text stays literal
 * text (a question holding `<|im_end|>` stays text). Images are sentinels in a string content, as
 * llama-server puts its media marker into the message text: every template handles string
 * content, and mtmd adds the family's image delimiters itself.
 */
import type { Template as JinjaTemplate } from '@huggingface/jinja' with { 'resolution-mode': 'import' };

import { ChainOfSpotError } from '../common/errors';
import { mergeParts, type ImageSlot, type Prompt, type PromptPart } from './prompt';

// @huggingface/jinja is an ES module that ships a CommonJS build beside it; this package compiles
// to CommonJS, so it takes that build with require (types from the module's declarations).
const { Template } = require('@huggingface/jinja') as { Template: typeof JinjaTemplate };

/** One message of a conversation, as prompt parts (text and image parts only). */
export interface ChatMessage {
  readonly role: 'system' | 'user' | 'assistant';
  readonly parts: Prompt;
}

const TEXT = /\uE000(\d+)\uE001/u;
const SENTINEL = /(\uE000\d+\uE001|\uE002(?:original|roi)\uE003|\uE004)/u;
/** Where the model's answer goes in a conversation rendered for its continuation. */
const ANSWER = '\uE004';
const ANSWER_TURN: ChatMessage = Object.freeze({ role: 'assistant', parts: [] });

export class ChatTemplate {
  readonly #template: JinjaTemplate;
  readonly #bosToken: string;
  readonly #eosToken: string;

  /**
   * @param source the Jinja source.
   * @param tokens the texts of the vocabulary's BOS and EOS tokens, which templates write themselves.
   * @throws ChainOfSpotError `ERR_MODEL_LOAD` when the template cannot be parsed.
   */
  constructor(source: string, tokens: { bos: string; eos: string }) {
    try {
      this.#template = new Template(source);
    } catch (error) {
      throw new ChainOfSpotError('ERR_MODEL_LOAD', `the model's chat template (tokenizer.chat_template) cannot be parsed: ${(error as Error).message}; pass the family's GGUF as converted by llama.cpp`, { cause: error });
    }
    this.#bosToken = tokens.bos;
    this.#eosToken = tokens.eos;
  }

  /** The conversation up to the assistant's turn that follows it (`add_generation_prompt`). */
  prompt(messages: readonly ChatMessage[]): Prompt {
    const { rendered, texts } = this.#renderString(messages);
    return this.#split(rendered, texts);
  }

  /**
   * What follows an assistant's answer to the conversation `before` when `after` is added: the end
   * of the answer's turn, the new messages and the next assistant turn's opening. The answer itself
   * is what the model generated, already in the cache.
   * @throws ChainOfSpotError `ERR_MODEL_LOAD` when the template does not render the longer
   *   conversation as a continuation of the shorter one (it rewrites history), so the cache of
   *   turn one could not be kept.
   */
  continuation(before: readonly ChatMessage[], after: readonly ChatMessage[]): Prompt {
    const opening = this.#renderString(before);
    const whole = this.#renderString([...before, ANSWER_TURN, ...after]);
    const at = whole.rendered.indexOf(ANSWER);
    if (whole.rendered.slice(0, at) !== opening.rendered) {
      throw new ChainOfSpotError(
        'ERR_MODEL_LOAD',
        "the model's chat template renders the first turn differently once the conversation goes on, so the second turn cannot continue the first in the cache",
      );
    }
    return this.#split(whole.rendered.slice(at + ANSWER.length), whole.texts);
  }

  /** The messages rendered with sentinels, and the texts the text sentinels stand for. */
  #renderString(messages: readonly ChatMessage[]): { rendered: string; texts: string[] } {
    const texts: string[] = [];
    const content = messages.map((message) => ({
      role: message.role,
      content: message === ANSWER_TURN ? ANSWER : message.parts.map((part) => sentinel(part, texts)).join(''),
    }));
    let rendered: string;
    try {
      rendered = this.#template.render({
        messages: content,
        add_generation_prompt: true,
        bos_token: this.#bosToken,
        eos_token: this.#eosToken,
      });
    } catch (error) {
      throw new ChainOfSpotError('ERR_MODEL_LOAD', `the model's chat template failed to render a conversation: ${(error as Error).message}`, { cause: error });
    }
    return { rendered, texts };
  }

  #split(rendered: string, texts: readonly string[]): Prompt {
    const parts: PromptPart[] = rendered.split(SENTINEL).map((piece, index): PromptPart => {
      if (index % 2 === 0) return { type: 'template', text: piece };
      const text = TEXT.exec(piece);
      if (text) return { type: 'text', text: texts[Number(text[1])]! };
      if (piece === ANSWER) throw new ChainOfSpotError('ERR_MODEL_LOAD', "the model's chat template wrote an assistant answer twice");
      return { type: 'image', image: piece.slice(1, -1) as ImageSlot };
    });
    return mergeParts(parts);
  }
}

function sentinel(part: PromptPart, texts: string[]): string {
  if (part.type === 'image') return `\uE002${part.image}\uE003`;
  if (part.type !== 'text') throw new TypeError('a chat message holds text and image parts only');
  texts.push(part.text);
  return `\uE000${texts.length - 1}\uE001`;
}
