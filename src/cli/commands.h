/* One function per `lemonpc <command>`, each in src/cli/cmd_<name>.c.
 * Each returns the process exit status (0 ok, 1 error, 2 usage) and prints
 * its own --help. To add a command: declare it here and list it in main.c. */
#ifndef LM_CLI_COMMANDS_H
#define LM_CLI_COMMANDS_H

int cmd_info(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_talk(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_dataset(int argc, char **argv);
int cmd_filter(int argc, char **argv);
int cmd_review(int argc, char **argv);
int cmd_datagen(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_pairs(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_peft(int argc, char **argv);
int cmd_stamp(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_build(int argc, char **argv);

#endif
