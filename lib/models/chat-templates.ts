/**
 * Chat templates in the shape of each model family's own (`tokenizer.chat_template`, Jinja as
 * transformers renders it), written for the tiny pairs of the test suite: real GGUFs carry their
 * own. Messages hold a string, or a list of `{ type: 'image' }` and `{ type: 'text', text }` items,
 * as transformers' processors pass them; each template writes an image item as its family's
 * placeholder.
 */

/** ChatML with Qwen2.5-VL's default system message and `<|vision_start|><|image_pad|><|vision_end|>` images. */
export const QWEN25_VL_TEMPLATE = chatMl('<|vision_start|><|image_pad|><|vision_end|>', 'You are a helpful assistant.');

/** ChatML as Qwen3-VL writes it: no default system message, the same image placeholder. */
export const QWEN3_VL_TEMPLATE = chatMl('<|vision_start|><|image_pad|><|vision_end|>', undefined);

/** ChatML with InternVL's `<image>` placeholder (the processor expands it to `<img>…</img>`). */
export const INTERNVL_TEMPLATE = chatMl('<image>\n', 'You are an AI assistant that answers questions about images.');

/** Gemma 3: BOS, `<start_of_turn>user` / `<start_of_turn>model`, `<start_of_image>` images. */
export const GEMMA3_TEMPLATE = [
  '{{- bos_token -}}',
  '{%- for message in messages -%}',
  "{%- set role = 'model' if message.role == 'assistant' else message.role -%}",
  "{{- '<start_of_turn>' + role + '\\n' -}}",
  '{%- if message.content is string -%}{{- message.content -}}',
  "{%- else -%}{%- for item in message.content -%}{%- if item.type == 'image' -%}{{- '<start_of_image>' -}}{%- elif item.type == 'text' -%}{{- item.text -}}{%- endif -%}{%- endfor -%}",
  '{%- endif -%}',
  "{{- '<end_of_turn>\\n' -}}",
  '{%- endfor -%}',
  "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}",
].join('');

function chatMl(image: string, defaultSystem: string | undefined): string {
  return [
    defaultSystem === undefined
      ? ''
      : `{%- if messages[0].role != 'system' -%}{{- '<|im_start|>system\\n${defaultSystem}<|im_end|>\\n' -}}{%- endif -%}`,
    '{%- for message in messages -%}',
    "{{- '<|im_start|>' + message.role + '\\n' -}}",
    '{%- if message.content is string -%}{{- message.content -}}',
    `{%- else -%}{%- for item in message.content -%}{%- if item.type == 'image' -%}{{- ${JSON.stringify(image)} -}}{%- elif item.type == 'text' -%}{{- item.text -}}{%- endif -%}{%- endfor -%}`,
    '{%- endif -%}',
    "{{- '<|im_end|>\\n' -}}",
    '{%- endfor -%}',
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}",
  ].join('');
}
